// The object behind the opaque omnimodel_context, shared by the C API files (c_api.cpp, and
// vla/c_api_vla.cpp for the robot-side entry points).
#pragma once

#include "error.hpp"
#include "runtime.hpp"

#include <memory>
#include <new>
#include <string>

namespace omni::vla {
class robot_io;  // the robot side of a VLA family (tokenizer, preprocessing), built on first use (vla/robot_io.hpp)
}

struct omnimodel_context {
    std::unique_ptr<omni::runtime>     rt;
    mutable std::string                last_error;  // set by const queries too
    std::shared_ptr<omni::vla::robot_io> vla;      // lazily, by the first robot-side call
};

namespace omni {

// The C boundary: run f, and turn whatever it throws into a status code with its message in err.
template <typename F>
omnimodel_status guarded(std::string & err, F && f) {
    try {
        f();
        err.clear();
        return OMNIMODEL_OK;
    } catch (const omni::error & e) {
        err = e.what();
        return e.code();
    } catch (const std::bad_alloc &) {
        err = "out of memory";
        return OMNIMODEL_ERR_OUT_OF_MEMORY;
    } catch (const std::exception & e) {
        err = std::string("internal error: ") + e.what();
        return OMNIMODEL_ERR_INTERNAL;
    } catch (...) {
        err = "internal error";
        return OMNIMODEL_ERR_INTERNAL;
    }
}

}  // namespace omni
