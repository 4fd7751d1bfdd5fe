// A user regex (LogCheck, wait_for_log) that is safe to run on the engine thread.
//
// std::regex matches recursively (a 16 KiB line overflows the stack) and without any bound
// on backtracking (`(x+x+)+y` on 40 characters runs for ever). Pattern uses Boost.Regex,
// whose matcher keeps its backtracking state on the heap and gives up after a number of
// steps that grows with the line and the pattern; a search that gives up reports
// `too_costly` instead of crashing or freezing the owner. Boost's headers stay in
// pattern.cpp, so including this file is cheap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace corral {

enum class Match : std::uint8_t {
  not_found,
  found,
  too_costly,  // the matcher hit its complexity or memory limit on this line
};

class Pattern {
 public:
  // Throws ConfigError "'TEXT' is not a valid regex: WHY" for a pattern Boost rejects.
  static Pattern compile(const std::string& text);
  // nullopt for a valid pattern, else why it is not one (Boost's words, without the pattern).
  static std::optional<std::string> error_of(const std::string& text);

  // Searches the whole line for the pattern (anywhere in it, as std::regex_search did).
  // Never throws, never recurses; the time it takes is bounded by Boost's step limit.
  Match search(std::string_view line) const noexcept;

  const std::string& text() const noexcept { return text_; }
  // What a check or a waiter reports when search() said too_costly on a line of `bytes`.
  std::string too_costly_message(std::size_t bytes) const;

 private:
  struct Compiled;
  Pattern(std::string text, std::shared_ptr<const Compiled> re);

  std::string text_;
  // Shared and immutable: copies are cheap and a compiled regex may be searched from
  // several threads at once.
  std::shared_ptr<const Compiled> re_;
};

}  // namespace corral
