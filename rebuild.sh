#!/usr/bin/env bash
# Rebuild the C++ runtime + extension after C++ changes (editable install; Python changes need nothing).
set -e
cd "$(dirname "$0")"
pip install -q --no-build-isolation -e . -Cbuild-dir=build/dev -Ceditable.rebuild=false 2>&1 | grep -v WARNING || true
python -c "import omnimodel._runtime as r; print('runtime', r.version())"
