// Log capture without surprises: bytes from a pipe become lines (a partial line waits for
// its end, an endless line is cut), and lines go to a ring bounded in count and bytes.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace corral {

enum class Stream : std::uint8_t { out = 1, err = 2 };

struct LogLine {
  std::uint64_t seq = 0;      // per service, increasing, never reused
  std::int64_t time_ns = 0;   // wall clock (display only)
  Stream stream = Stream::out;
  std::string text;           // without the newline
};

// Splits a byte stream into lines. Lines longer than `max_line` bytes are cut into pieces
// of at most that size (on a UTF-8 character boundary), so one runaway line cannot grow
// memory without bound and no character is split in two.
class LineSplitter {
 public:
  explicit LineSplitter(std::size_t max_line = 16 * 1024) : max_line_(max_line) {}
  // Calls `emit(std::string_view)` once per complete line.
  template <class F>
  void feed(std::string_view data, F&& emit) {
    while (!data.empty()) {
      auto nl = data.find('\n');
      std::string_view chunk = data.substr(0, nl == std::string_view::npos ? data.size() : nl);
      if (partial_.empty() && nl != std::string_view::npos && chunk.size() <= max_line_) {
        emit(strip_cr(chunk));  // common case: a whole line inside one read, no copy
      } else {
        std::size_t room = max_line_ - partial_.size();
        if (chunk.size() > room) {
          // Cut where a character starts, so neither piece holds half of one.
          std::size_t cut = char_boundary(chunk, max_line_);
          if (cut >= partial_.size()) {
            std::size_t take = cut - partial_.size();
            partial_.append(chunk.substr(0, take));
            emit(std::string_view(partial_));
            partial_.clear();
            data.remove_prefix(take);
          } else {  // the character began in an earlier read
            emit(std::string_view(partial_).substr(0, cut));
            partial_.erase(0, cut);
          }
          continue;
        }
        partial_.append(chunk);
        if (nl != std::string_view::npos) {
          emit(strip_cr(partial_));
          partial_.clear();
        }
      }
      if (nl == std::string_view::npos) break;
      data.remove_prefix(nl + 1);
    }
  }
  // The trailing partial line at end of stream.
  template <class F>
  void finish(F&& emit) {
    if (!partial_.empty()) emit(std::string_view(partial_));
    partial_.clear();
  }

 private:
  // Where to cut the line partial_ + chunk (longer than `cut` bytes) at most `cut` bytes in:
  // `cut` itself, or up to 3 bytes earlier when a UTF-8 sequence would straddle it. Bytes
  // that are not valid UTF-8 are cut anywhere (they decode to U+FFFD either way), and a
  // piece is never empty.
  std::size_t char_boundary(std::string_view chunk, std::size_t cut) const {
    auto byte = [&](std::size_t i) {
      return static_cast<unsigned char>(i < partial_.size() ? partial_[i] : chunk[i - partial_.size()]);
    };
    auto continuation = [](unsigned char b) { return (b & 0xC0) == 0x80; };
    if (!continuation(byte(cut))) return cut;
    for (std::size_t back = 1; back <= 3 && back < cut; ++back) {
      unsigned char b = byte(cut - back);
      if (continuation(b)) continue;
      std::size_t len = b >= 0xF8 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
      return len > back ? cut - back : cut;
    }
    return cut;
  }
  static std::string_view strip_cr(std::string_view s) {
    if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
    return s;
  }
  std::size_t max_line_;
  std::string partial_;
};

class LogRing {
 public:
  LogRing(std::size_t max_lines, std::size_t max_bytes)
      : max_lines_(max_lines ? max_lines : 1), max_bytes_(max_bytes) {}
  const LogLine& push(std::int64_t time_ns, Stream stream, std::string_view text);
  // The last `n` lines (all when n < 0), oldest first.
  std::vector<LogLine> tail(long n) const;
  std::uint64_t next_seq() const noexcept { return next_seq_; }
  std::uint64_t dropped() const noexcept { return dropped_; }
  std::size_t size() const noexcept { return lines_.size(); }
  std::size_t bytes() const noexcept { return bytes_; }
  const std::deque<LogLine>& lines() const noexcept { return lines_; }

 private:
  std::size_t max_lines_, max_bytes_;
  std::size_t bytes_ = 0;
  std::uint64_t next_seq_ = 0, dropped_ = 0;
  std::deque<LogLine> lines_;
};

}  // namespace corral
