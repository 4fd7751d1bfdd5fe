#include "corral/logs/log_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace corral {

LogFile::LogFile(std::string path, std::uint64_t max_size, int keep)
    : path_(std::move(path)), max_size_(max_size), keep_(keep < 0 ? 0 : keep) {
  open();
}

LogFile::~LogFile() {
  flush();
  if (fd_ >= 0) ::close(fd_);
}

bool LogFile::open() {
  // O_NOFOLLOW: a symlink planted where the log goes must not redirect it.
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) {
    error_ = fmt::format("cannot open log file {}: {}", path_, std::strerror(errno));
    return false;
  }
  struct stat st {};
  size_ = ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  return true;
}

void LogFile::add(std::int64_t time_ns, Stream stream, std::string_view text) {
  if (fd_ < 0) return;
  std::int64_t second = time_ns / 1'000'000'000;
  if (second != stamp_second_) {  // lines of one read share a time: format it once
    std::time_t t = static_cast<std::time_t>(second);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    std::strftime(stamp_, sizeof stamp_, "%Y-%m-%dT%H:%M:%S.", &tm);
    stamp_second_ = second;
  }
  auto micros = static_cast<unsigned>((time_ns % 1'000'000'000) / 1000);
  buf_.append(stamp_);
  fmt::format_to(std::back_inserter(buf_), "{:06}Z {} ", micros, stream == Stream::out ? "out" : "err");
  buf_.append(text);
  buf_.push_back('\n');
}

bool LogFile::flush() {
  if (fd_ < 0) {
    buf_.clear();
    return false;
  }
  std::string_view left = buf_;
  while (!left.empty() && fd_ >= 0) {
    // As many whole lines as still fit in this file; a file that already holds something
    // is rotated first when not even the next line fits (a line longer than max_size gets
    // a file of its own).
    std::size_t take = left.size();
    if (max_size_ > 0) {
      std::uint64_t room = size_ < max_size_ ? max_size_ - size_ : 0;
      if (take > room) {
        std::size_t cut = room == 0 ? std::string_view::npos : left.rfind('\n', room - 1);
        if (cut == std::string_view::npos) {
          if (size_ > 0) {
            rotate();
            continue;
          }
          cut = left.find('\n');  // alone in an empty file, however long
        }
        take = cut == std::string_view::npos ? left.size() : cut + 1;
      }
    }
    if (!write_all(left.substr(0, take))) break;
    left.remove_prefix(take);
  }
  buf_.clear();
  return fd_ >= 0;
}

bool LogFile::write_all(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // disk full, quota, I/O error: stop here, say so once
      error_ = fmt::format("cannot write log file {}: {}", path_, std::strerror(n < 0 ? errno : ENOSPC));
      ::close(fd_);
      fd_ = -1;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
    size_ += static_cast<std::uint64_t>(n);
  }
  return true;
}

// path.keep-1 -> path.keep, ..., path -> path.1, then a new path; with keep 0 the file
// starts again empty.
void LogFile::rotate() {
  ::close(fd_);
  fd_ = -1;
  if (keep_ == 0) {
    if (::truncate(path_.c_str(), 0) != 0) error_ = fmt::format("cannot truncate log file {}: {}", path_, std::strerror(errno));
  } else {
    for (int i = keep_ - 1; i >= 1; --i)
      ::rename(fmt::format("{}.{}", path_, i).c_str(), fmt::format("{}.{}", path_, i + 1).c_str());
    ::rename(path_.c_str(), (path_ + ".1").c_str());
  }
  open();
}

}  // namespace corral
