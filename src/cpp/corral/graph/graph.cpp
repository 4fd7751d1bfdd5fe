#include "corral/graph/graph.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

namespace corral {

Graph::Graph(const std::vector<ServiceSpec>& services)
    : deps_(services.size()), rdeps_(services.size()) {
  std::unordered_map<std::string_view, std::size_t> index;
  for (std::size_t i = 0; i < services.size(); ++i) {
    if (!index.emplace(services[i].name, i).second)
      throw ConfigError(fmt::format("service '{}' is defined twice", services[i].name));
  }
  for (std::size_t i = 0; i < services.size(); ++i) {
    for (const auto& dep : services[i].depends_on) {
      auto it = index.find(dep.name);
      if (it == index.end())
        throw ConfigError(fmt::format("service '{}': depends_on: unknown service '{}'",
                                      services[i].name, dep.name));
      if (it->second == i)
        throw ConfigError(fmt::format("service '{}': depends_on: a service cannot depend on itself",
                                      services[i].name));
      if (std::find(deps_[i].begin(), deps_[i].end(), it->second) != deps_[i].end()) continue;
      deps_[i].push_back(it->second);
      rdeps_[it->second].push_back(i);
    }
  }

  // Kahn's algorithm, level by level. Whatever is left over sits on or behind a cycle.
  std::vector<std::size_t> missing(services.size());
  std::vector<std::size_t> current;
  for (std::size_t i = 0; i < services.size(); ++i) {
    missing[i] = deps_[i].size();
    if (missing[i] == 0) current.push_back(i);
  }
  std::size_t placed = 0;
  while (!current.empty()) {
    placed += current.size();
    std::vector<std::size_t> next;
    for (auto i : current)
      for (auto d : rdeps_[i])
        if (--missing[d] == 0) next.push_back(d);
    std::sort(next.begin(), next.end());
    levels_.push_back(std::move(current));
    current = std::move(next);
  }
  if (placed == services.size()) return;

  // Find one cycle to name: walk unresolved dependencies from an unplaced service until a
  // node repeats. Every unplaced node has at least one unplaced dependency.
  std::size_t start = 0;
  while (missing[start] == 0) ++start;
  std::vector<std::size_t> path;
  std::vector<int> pos(services.size(), -1);
  std::size_t node = start;
  while (pos[node] < 0) {
    pos[node] = static_cast<int>(path.size());
    path.push_back(node);
    for (auto d : deps_[node])
      if (missing[d] != 0) {
        node = d;
        break;
      }
  }
  std::string text;
  for (std::size_t k = static_cast<std::size_t>(pos[node]); k < path.size(); ++k)
    text += services[path[k]].name + " -> ";
  text += services[node].name;
  throw ConfigError(fmt::format("dependency cycle: {}", text));
}

namespace {
std::vector<bool> closure(const std::vector<std::vector<std::size_t>>& edges,
                          const std::vector<std::size_t>& roots) {
  std::vector<bool> seen(edges.size(), false);
  std::vector<std::size_t> todo(roots.begin(), roots.end());
  while (!todo.empty()) {
    auto i = todo.back();
    todo.pop_back();
    if (seen[i]) continue;
    seen[i] = true;
    for (auto j : edges[i]) todo.push_back(j);
  }
  return seen;
}
}  // namespace

std::vector<bool> Graph::with_dependencies(const std::vector<std::size_t>& roots) const {
  return closure(deps_, roots);
}
std::vector<bool> Graph::with_dependents(const std::vector<std::size_t>& roots) const {
  return closure(rdeps_, roots);
}

}  // namespace corral
