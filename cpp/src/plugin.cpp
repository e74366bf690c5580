// Architecture plugins: shared libraries holding a generated graph (templates/ rendered by
// omnimodel.codegen, compiled by omnimodel.build) that register it with the runtime at load time.
//
// The contract is one C symbol, `void omnimodel_plugin_register(void)`, which calls
// omni::register_architecture(name, fn). A C symbol (not a C++ static initialiser) so that loading
// the same library again re-registers it, and so a missing entry point is a clean error.
#include "omnimodel.h"

#include "error.hpp"
#include "graph.hpp"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <mutex>
#include <string>
#include <vector>

namespace {

using register_fn = void (*)();

constexpr const char * k_entry = "omnimodel_plugin_register";

// Handles stay open for the life of the process: registered build functions point into them.
std::mutex &         handles_mutex() {
    static std::mutex mu;
    return mu;
}
std::vector<void *> & open_handles() {
    static std::vector<void *> v;
    return v;
}

std::string dl_error() {
    const char * e = dlerror();
    return e != nullptr ? e : "unknown dlopen error";
}

}  // namespace

extern "C" omnimodel_status omnimodel_load_plugin(const char * path) {
    std::string & err = omni::thread_load_error();
    if (path == nullptr || path[0] == '\0') {
        err = "plugin path is NULL or empty";
        return OMNIMODEL_ERR_INVALID_ARGUMENT;
    }
    std::lock_guard<std::mutex> lock(handles_mutex());
    dlerror();  // clear a stale message
    // RTLD_LOCAL: a plugin's own symbols must not interpose on the core's or on another plugin's.
    void * handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        err = omni::format("cannot load plugin '%s': %s", path, dl_error().c_str());
        return OMNIMODEL_ERR_IO;
    }
    dlerror();
    auto entry = reinterpret_cast<register_fn>(dlsym(handle, k_entry));
    if (entry == nullptr) {
        err = omni::format("plugin '%s' has no '%s' entry point (%s)", path, k_entry, dl_error().c_str());
        dlclose(handle);  // nothing of it was registered
        return OMNIMODEL_ERR_UNSUPPORTED;
    }
    // The registry records which file serves the architecture (omnimodel_graph_source), by its
    // absolute path so that the record still names the file after a change of directory.
    char        resolved[PATH_MAX];
    std::string source = std::string("plugin:") + (realpath(path, resolved) != nullptr ? resolved : path);
    try {
        omni::registration_source scope(source);
        entry();
    } catch (const omni::error & e) {
        err = omni::format("plugin '%s' failed to register: %s", path, e.what());
        return e.code();
    } catch (const std::exception & e) {
        err = omni::format("plugin '%s' failed to register: %s", path, e.what());
        return OMNIMODEL_ERR_INTERNAL;
    } catch (...) {
        err = omni::format("plugin '%s' failed to register", path);
        return OMNIMODEL_ERR_INTERNAL;
    }
    open_handles().push_back(handle);  // dlopen refcounts repeats; we never close any of them
    err.clear();
    return OMNIMODEL_OK;
}
