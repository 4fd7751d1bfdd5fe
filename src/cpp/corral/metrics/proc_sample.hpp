// On-demand /proc sampling of each service's process group: no background timer, so an
// idle stack costs nothing; the caller's thread does the reading, not the engine.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "corral/engine/engine.hpp"

namespace corral {

// One sample per (service, leader pid); a pid of 0 gives an empty sample.
std::vector<ProcessSample> sample_groups(const std::vector<std::pair<std::string, pid_t>>& groups);

// Prometheus text exposition of per-service state and samples.
std::string prometheus_text(const std::string& stack, const std::vector<ServiceStatus>& status,
                            const std::vector<ProcessSample>& samples);

}  // namespace corral
