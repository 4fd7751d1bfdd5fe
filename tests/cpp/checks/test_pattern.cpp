#include "corral/checks/pattern.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <regex>
#include <string>

#include "corral/core/types.hpp"

using namespace corral;

namespace {
Match search(const char* pattern, std::string_view line) { return Pattern::compile(pattern).search(line); }
}  // namespace

TEST(Pattern, OrdinaryPatternsAreSearchedAnywhereInTheLine) {
  EXPECT_EQ(search("ready", "server is ready now"), Match::found);
  EXPECT_EQ(search("listening on port \\d+", "2024-01-01 INFO listening on port 8080"), Match::found);
  EXPECT_EQ(search("listening on port \\d+", "listening on port http"), Match::not_found);
  EXPECT_EQ(search("a|b", "xxbxx"), Match::found);
  EXPECT_EQ(search("(?:GET|POST) /health", "POST /health 200"), Match::found);
  EXPECT_EQ(search("x", ""), Match::not_found);
  EXPECT_EQ(search("", ""), Match::found);
}

TEST(Pattern, AnchorsHoldAtTheEndsOfTheLine) {
  EXPECT_EQ(search("^ready$", "ready"), Match::found);
  EXPECT_EQ(search("^ready", "not ready"), Match::not_found);
  EXPECT_EQ(search("ready$", "ready?"), Match::not_found);
  EXPECT_EQ(search("\\bready\\b", "already"), Match::not_found);
  EXPECT_EQ(search("\\bready\\b", "is ready."), Match::found);
}

TEST(Pattern, ClassesAndEscapesFollowEcmaScript) {
  EXPECT_EQ(search("[0-9]{3}", "code 404"), Match::found);
  EXPECT_EQ(search("[^a-z]", "abc"), Match::not_found);
  EXPECT_EQ(search("\\w+@\\w+\\.com", "mail bob@example.com"), Match::found);
  EXPECT_EQ(search("\\s\\d", "a 1"), Match::found);
  EXPECT_EQ(search("\\x41", "A"), Match::found);
  EXPECT_EQ(search("\\.", "no dot"), Match::not_found);
  EXPECT_EQ(search("(?=ready)r", "ready"), Match::found);  // lookahead
  EXPECT_EQ(search("(a)\\1", "xaax"), Match::found);       // backreference
  // Non-ASCII text is matched byte by byte, as std::regex did: a literal in UTF-8 matches.
  EXPECT_EQ(search("prêt", "serveur prêt"), Match::found);
}

TEST(Pattern, InvalidPatternsAreConfigErrorsNamingThePattern) {
  try {
    Pattern::compile("(unclosed");
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'(unclosed' is not a valid regex"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(Pattern::error_of("[z-a]"));
  EXPECT_TRUE(Pattern::error_of("*"));
  EXPECT_FALSE(Pattern::error_of("ok (fine)"));
}

// The defects of std::regex: these crashed (stack overflow) or never returned.
TEST(Pattern, CatastrophicBacktrackingIsTooCostlyNotAFreeze) {
  EXPECT_EQ(search("(x+x+)+y", std::string(40, 'x')), Match::too_costly);
  EXPECT_EQ(search("(x+x+)+y", std::string(40, 'x') + "y"), Match::found);
}

TEST(Pattern, LongLinesNeverOverflowTheStack) {
  std::string line(16 * 1024, 'a');
  // No match anywhere: quadratic in the line, so Boost's step limit ends it.
  EXPECT_EQ(search("(.|\\n)*ready", line), Match::too_costly);
  EXPECT_EQ(search("(\\w|-)+ started", line), Match::too_costly);
  // The same patterns where the line does match are found in linear time.
  EXPECT_EQ(search("(.|\\n)*ready", line + "ready"), Match::found);
  EXPECT_EQ(search("(\\w|-)+ started", line + " started"), Match::found);
  // Ordinary patterns stay cheap on long lines, a leading .* included.
  EXPECT_EQ(search(".*foo", line), Match::not_found);
  EXPECT_EQ(search("a+b", line), Match::not_found);
  EXPECT_EQ(search("^a*$", line), Match::found);
}

TEST(Pattern, TooCostlyMessageNamesThePatternAndTheLineLength) {
  auto p = Pattern::compile("(x+x+)+y");
  EXPECT_EQ(p.text(), "(x+x+)+y");
  EXPECT_EQ(p.too_costly_message(40), "log pattern '(x+x+)+y' is too costly to match on a line of 40 bytes");
}

TEST(Pattern, CopiesShareTheCompiledPattern) {
  auto p = Pattern::compile("ready");
  Pattern q = p;
  EXPECT_EQ(q.search("ready"), Match::found);
  EXPECT_EQ(q.text(), "ready");
}

// Not an assertion: the per-line cost of a typical readiness pattern, against the
// std::regex it replaced, printed for docs and reviews.
TEST(Pattern, PerLineCostAgainstStdRegex) {
  const char* pattern = "listening on (port )?\\d+";
  std::string line = "2024-05-01T12:00:00.123Z INFO http: served GET /api/items?page=3 in 1.2ms status=200";
  constexpr int rounds = 50000;
  auto p = Pattern::compile(pattern);
  std::regex re(pattern, std::regex::ECMAScript);
  int hits = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) hits += p.search(line) == Match::found;
  auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) hits += std::regex_search(line, re);
  auto t2 = std::chrono::steady_clock::now();
  auto ns = [](auto d) { return std::chrono::duration<double, std::nano>(d).count() / rounds; };
  std::printf("per line (%zu bytes, no match): Pattern %.0f ns, std::regex %.0f ns\n", line.size(), ns(t1 - t0),
              ns(t2 - t1));
  EXPECT_EQ(hits, 0);
}
