// Graph builders compiled into the core runtime. Generated architectures register theirs at
// load time through omni::register_architecture.
#pragma once

namespace omni {

class graph_builder;

void build_omni_mlp(graph_builder & gb);
void build_openvla_oft(graph_builder & gb);

}  // namespace omni
