#include "corral/logs/log_buffer.hpp"

namespace corral {

const LogLine& LogRing::push(std::int64_t time_ns, Stream stream, std::string_view text) {
  lines_.push_back(LogLine{next_seq_++, time_ns, stream, std::string(text)});
  bytes_ += text.size();
  // Keep at least the newest line, whatever its size.
  while (lines_.size() > 1 && (lines_.size() > max_lines_ || bytes_ > max_bytes_)) {
    bytes_ -= lines_.front().text.size();
    lines_.pop_front();
    ++dropped_;
  }
  return lines_.back();
}

std::vector<LogLine> LogRing::tail(long n) const {
  std::size_t count = n < 0 ? lines_.size() : std::min<std::size_t>(static_cast<std::size_t>(n), lines_.size());
  return {lines_.end() - static_cast<std::ptrdiff_t>(count), lines_.end()};
}

}  // namespace corral
