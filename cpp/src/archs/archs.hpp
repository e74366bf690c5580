// Graph builders compiled into the core runtime: only the toy omni-mlp, which the doctor and the
// runtime tests use. Model architectures are generated (`omnimodel convert`) and register theirs at
// load time through omni::register_architecture.
#pragma once

namespace omni {

class graph_builder;

void build_omni_mlp(graph_builder & gb);

#ifdef OMNIMODEL_LINKED_ARCHS
// Defined by the standalone project's generated registration unit (linked_archs.cpp).
void register_linked_architectures();
#endif

}  // namespace omni
