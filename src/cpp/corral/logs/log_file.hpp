// A service's log file ([logs] dir): every captured line, stamped with its time and
// stream, appended as it arrives and rotated by size. Lines are buffered per read of the
// service's pipe and written with one write(2), so the cost per line is a memcpy and a
// formatted timestamp, not a syscall.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "corral/logs/log_buffer.hpp"

namespace corral {

class LogFile {
 public:
  // `max_size` 0: never rotated. `keep`: rotated files kept (path.1 .. path.keep); 0 means
  // the file is truncated when it is full.
  LogFile(std::string path, std::uint64_t max_size, int keep);
  ~LogFile();
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;

  // `2026-11-30T07:53:52.123456Z out text` (bytes as the service wrote them).
  void add(std::int64_t time_ns, Stream stream, std::string_view text);
  // Writes what add() buffered, rotating first when the file would pass max_size. Returns
  // false once the file cannot be written (the first error is kept in error(); later lines
  // are dropped rather than retried on every read).
  bool flush();
  const std::string& error() const noexcept { return error_; }
  const std::string& path() const noexcept { return path_; }

 private:
  bool open();
  void rotate();
  bool write_all(std::string_view data);

  std::string path_;
  std::uint64_t max_size_;
  int keep_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::string buf_;
  std::string error_;
  std::int64_t stamp_second_ = -1;  // the second whose text is cached in stamp_
  char stamp_[24] = {};             // "2026-11-30T07:53:52."
};

}  // namespace corral
