#include "corral/control/static_files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

namespace corral::control {
namespace {

bool plain_name(std::string_view n) {
  if (n.empty() || n.front() == '.' || n.size() > 128) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_';
  });
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// FNV-1a: a cheap fingerprint that changes when the file does; not a security boundary.
std::string fingerprint(std::string_view body) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : body) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("\"{:016x}-{:x}\"", h, body.size());
}

}  // namespace

std::string_view static_content_type(std::string_view name) {
  if (ends_with(name, ".html")) return "text/html; charset=utf-8";
  if (ends_with(name, ".js") || ends_with(name, ".mjs")) return "text/javascript; charset=utf-8";
  if (ends_with(name, ".css")) return "text/css; charset=utf-8";
  if (ends_with(name, ".svg")) return "image/svg+xml";
  if (ends_with(name, ".png")) return "image/png";
  if (ends_with(name, ".json")) return "application/json";
  if (ends_with(name, ".txt") || ends_with(name, ".md")) return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

std::map<std::string, StaticFile> load_static_files(const std::string& dir, std::size_t max_bytes) {
  std::map<std::string, StaticFile> out;
  if (dir.empty()) return out;
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return out;
  DIR* d = ::fdopendir(dfd);
  if (!d) {
    ::close(dfd);
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (!plain_name(name)) continue;
    // O_NOFOLLOW and the fstat below: only regular files that are really in this directory.
    int fd = ::openat(dfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat st {};
    std::string body;
    bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) <= max_bytes;
    if (ok) {
      body.resize(static_cast<std::size_t>(st.st_size));
      std::size_t got = 0;
      while (got < body.size()) {
        ssize_t n = ::read(fd, body.data() + got, body.size() - got);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
      }
      body.resize(got);
    }
    ::close(fd);
    if (!ok) continue;
    StaticFile f;
    f.content_type = std::string(static_content_type(name));
    f.etag = fingerprint(body);
    f.body = std::move(body);
    out.emplace(std::move(name), std::move(f));
  }
  ::closedir(d);
  return out;
}

bool etag_matches(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    auto comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.rfind("W/", 0) == 0) item.remove_prefix(2);
    if (item == "*" || item == etag) return true;
  }
  return false;
}

}  // namespace corral::control
