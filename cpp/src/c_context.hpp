// The object behind the opaque omnimodel_context, shared by the C API files (c_api.cpp, and
// vla/c_api_vla.cpp for the robot-side entry points).
#pragma once

#include "runtime.hpp"

#include <memory>
#include <string>

namespace omni::vla {
struct state;  // tokenizer + preprocessing settings, built on first use (vla/predict.hpp)
}

struct omnimodel_context {
    std::unique_ptr<omni::runtime>     rt;
    mutable std::string                last_error;  // set by const queries too
    std::shared_ptr<omni::vla::state> vla;         // lazily, by the first robot-side call
};
