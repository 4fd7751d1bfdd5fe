// corral's per-user runtime directory and its private subdirectories ("ports", "stacks"),
// with unsafe ones reported as corral::Error (the checks are in os/runtime_dir.hpp).
#pragma once

#include <string>

namespace corral {

// <runtime dir>/<name>, created 0700 and checked (ours, a real directory). Throws
// corral::Error naming the path when it or the runtime directory is unsafe.
std::string runtime_subdir(const std::string& name);

}  // namespace corral
