#include "corral/graph/graph.hpp"

#include <gtest/gtest.h>

using namespace corral;

namespace {
ServiceSpec svc(std::string name, std::vector<std::string> deps = {}) {
  ServiceSpec s;
  s.name = std::move(name);
  s.argv = {"true"};
  for (auto& d : deps) s.depends_on.push_back({d, Condition::ready});
  return s;
}
std::string error_of(const std::vector<ServiceSpec>& specs) {
  try {
    Graph g(specs);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Graph, LevelsFollowDependencies) {
  Graph g({svc("db"), svc("cache"), svc("api", {"db", "cache"}), svc("web", {"api"}), svc("worker", {"db"})});
  ASSERT_EQ(g.levels().size(), 3u);
  EXPECT_EQ(g.levels()[0], (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(g.levels()[1], (std::vector<std::size_t>{2, 4}));
  EXPECT_EQ(g.levels()[2], (std::vector<std::size_t>{3}));
  EXPECT_EQ(g.dependents(0), (std::vector<std::size_t>{2, 4}));
}

TEST(Graph, CycleIsNamedAlongItsPath) {
  auto msg = error_of({svc("a", {"b"}), svc("b", {"c"}), svc("c", {"a"}), svc("d")});
  EXPECT_EQ(msg, "dependency cycle: a -> b -> c -> a");
}

TEST(Graph, CycleBehindANonCyclicNodeNamesOnlyTheCycle) {
  auto msg = error_of({svc("x", {"a"}), svc("a", {"b"}), svc("b", {"a"})});
  EXPECT_NE(msg.find("a -> b -> a"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("x"), std::string::npos) << msg;
}

TEST(Graph, UnknownDependencyAndSelfDependency) {
  EXPECT_EQ(error_of({svc("api", {"db"})}), "service 'api': depends_on: unknown service 'db'");
  EXPECT_NE(error_of({svc("api", {"api"})}).find("cannot depend on itself"), std::string::npos);
  EXPECT_NE(error_of({svc("a"), svc("a")}).find("defined twice"), std::string::npos);
}

TEST(Graph, Closures) {
  Graph g({svc("db"), svc("api", {"db"}), svc("web", {"api"}), svc("other")});
  EXPECT_EQ(g.with_dependencies({2}), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(g.with_dependents({0}), (std::vector<bool>{true, true, true, false}));
}
