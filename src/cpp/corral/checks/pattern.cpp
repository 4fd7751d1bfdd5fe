#include "corral/checks/pattern.hpp"

// Boost.Regex gives up on a search after max(N*N, N*S*S) + 100,000 steps (N: line length,
// S: pattern length), with N*N capped by this macro. Boost's default cap, 100 M, costs a
// pathological pattern 1-4 s on a 16 KiB line, all of it on the engine thread; 10 M keeps
// that under half a second while linear patterns stay far below it (a few steps per byte).
// This is the only file that includes Boost.Regex, so the setting cannot disagree with
// another translation unit's.
#define BOOST_REGEX_MAX_STATE_COUNT 10000000

#include <boost/regex.hpp>
#include <fmt/format.h>

#include <new>
#include <stdexcept>

#include "corral/core/types.hpp"

namespace corral {

namespace {

// ECMAScript, as the engine's std::regex was, so patterns that worked keep working (Boost's
// ECMAScript is its Perl syntax, a superset). no_mod_m: `^` and `$` anchor the line, not
// line breaks inside it. `.` is left matching any byte: a line holds no '\n' anyway, and
// only then does Boost search a leading `.*` in linear time (with `.` excluding line
// breaks, `.*foo` on a 16 KiB line without "foo" is quadratic and too costly).
constexpr auto syntax = boost::regex::ECMAScript | boost::regex::no_mod_m;

}  // namespace

struct Pattern::Compiled {
  boost::regex re;
};

Pattern::Pattern(std::string text, std::shared_ptr<const Compiled> re) : text_(std::move(text)), re_(std::move(re)) {}

Pattern Pattern::compile(const std::string& text) {
  try {
    return Pattern(text, std::make_shared<const Compiled>(Compiled{boost::regex(text, syntax)}));
  } catch (const boost::regex_error& e) {
    throw ConfigError(fmt::format("'{}' is not a valid regex: {}", text, e.what()));
  }
}

std::optional<std::string> Pattern::error_of(const std::string& text) {
  try {
    boost::regex re(text, syntax);
  } catch (const boost::regex_error& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

Match Pattern::search(std::string_view line) const noexcept {
  try {
    return boost::regex_search(line.begin(), line.end(), re_->re) ? Match::found : Match::not_found;
  } catch (const std::runtime_error&) {
    // boost::regex_error with error_complexity (too many steps) or error_stack (the
    // backtracking memory ran out): the pattern backtracks without useful bound here.
    return Match::too_costly;
  } catch (const std::bad_alloc&) {
    return Match::too_costly;
  }
}

std::string Pattern::too_costly_message(std::size_t bytes) const {
  return fmt::format("log pattern '{}' is too costly to match on a line of {} bytes", text_, bytes);
}

}  // namespace corral
