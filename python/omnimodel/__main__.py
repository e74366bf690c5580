"""`python -m omnimodel`, the same as the `omnimodel` console script."""

from omnimodel.cli.main import main

raise SystemExit(main())
