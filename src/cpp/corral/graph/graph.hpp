// The dependency graph of a stack: validation (unknown names, cycles), start levels, and the
// reverse edges the engine walks when a service changes state.
#pragma once

#include <string>
#include <vector>

#include "corral/core/types.hpp"

namespace corral {

class Graph {
 public:
  // Throws ConfigError for duplicate names, unknown dependencies and cycles. The cycle
  // message spells the path, e.g. "dependency cycle: a -> b -> c -> a".
  explicit Graph(const std::vector<ServiceSpec>& services);

  std::size_t size() const noexcept { return deps_.size(); }
  // Indices of the services `i` depends on / that depend on `i`.
  const std::vector<std::size_t>& dependencies(std::size_t i) const { return deps_[i]; }
  const std::vector<std::size_t>& dependents(std::size_t i) const { return rdeps_[i]; }

  // Services grouped by level: level 0 has no dependencies, level k depends only on
  // levels < k. Names inside a level keep the order of the spec.
  const std::vector<std::vector<std::size_t>>& levels() const noexcept { return levels_; }

  // `roots` and everything they need, transitively (for start), or everything that needs
  // them (for stop), as a membership mask.
  std::vector<bool> with_dependencies(const std::vector<std::size_t>& roots) const;
  std::vector<bool> with_dependents(const std::vector<std::size_t>& roots) const;

 private:
  std::vector<std::vector<std::size_t>> deps_;
  std::vector<std::vector<std::size_t>> rdeps_;
  std::vector<std::vector<std::size_t>> levels_;
};

}  // namespace corral
