#include "error.hpp"

#include "ggml.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <vector>

namespace omni {

std::string format(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    const int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::vector<char> buf(n > 0 ? n + 1 : 1);
    std::vsnprintf(buf.data(), buf.size(), fmt, ap2);
    va_end(ap2);
    return std::string(buf.data(), n > 0 ? n : 0);
}

namespace {

std::mutex  g_log_mutex;
bool        g_verbose = false;
std::string g_recent;  // error/warning lines since the last log_clear_recent()

void log_callback(enum ggml_log_level level, const char * text, void * /*user_data*/) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) {
        if (g_recent.size() < 4096) {
            g_recent += text;
        }
    }
    if (g_verbose) {
        std::fputs(text, stderr);
    }
}

}  // namespace

void log_install(bool verbose) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_verbose = verbose;
    ggml_log_set(log_callback, nullptr);
}

void log_clear_recent() {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_recent.clear();
}

std::string log_recent_errors() {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    std::string s = g_recent;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
        s.pop_back();
    }
    return s;
}

}  // namespace omni
