// Errors inside the runtime are exceptions carrying a C API status; the C API boundary
// (c_api.cpp) turns them into return codes, so nothing escapes to robot code as a crash.
#pragma once

#include "omnimodel.h"

#include <stdexcept>
#include <string>

namespace omni {

class error : public std::runtime_error {
public:
    error(omnimodel_status code, const std::string & msg) : std::runtime_error(msg), code_(code) {}
    omnimodel_status code() const { return code_; }

private:
    omnimodel_status code_;
};

[[noreturn]] inline void fail(omnimodel_status code, const std::string & msg) { throw error(code, msg); }

// printf-style formatting for error messages.
std::string format(const char * fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

// ggml reports parse failures through its log callback; we keep the recent error lines so an
// exception can say *why* gguf rejected a file instead of just "failed".
void        log_install(bool verbose);

// The calling thread's message for omnimodel_last_error(NULL) (failed loads, plugin loads).
std::string & thread_load_error();
void        log_clear_recent();
std::string log_recent_errors();

}  // namespace omni
