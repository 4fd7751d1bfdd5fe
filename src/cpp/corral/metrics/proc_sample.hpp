// On-demand /proc sampling of each service's process group: no background timer, so an
// idle stack costs nothing; the caller's thread does the reading, not the engine.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "corral/engine/engine.hpp"

namespace corral {

// One sample per (service, leader pid); a pid of 0 gives an empty sample.
// `range`, when given, holds every pid that can belong to a group (see procfs::pids_since):
// only those are read, not the machine's thousands of older processes.
std::vector<ProcessSample> sample_groups(const std::vector<std::pair<std::string, pid_t>>& groups,
                                         const std::optional<std::pair<pid_t, pid_t>>& range = std::nullopt);

// A process that carries `marker` ("CORRAL_STACK=<id>") in its environment.
struct MarkedProcess {
  pid_t pid = 0;
  std::string service;  // its CORRAL_SERVICE
  std::string command;  // /proc/PID/comm
};

// Every process (readable by us) whose environment holds `marker` exactly: the services'
// descendants inherit it, even those that left the process group (double fork + setsid).
// `range`, when given, holds every pid worth opening (see procfs::pids_since); `follow`:
// and those created while it is looked at (see procfs::for_each_pid_in).
std::vector<MarkedProcess> find_marked(const std::string& marker,
                                       const std::optional<std::pair<pid_t, pid_t>>& range = std::nullopt,
                                       bool follow = false);
bool has_marker(pid_t pid, const std::string& marker, std::string* service = nullptr);

}  // namespace corral
