#include "corral/metrics/proc_sample.hpp"

#include "corral/metrics/procfs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <unordered_map>

namespace corral {
using procfs::read_small;

std::vector<ProcessSample> sample_groups(const std::vector<std::pair<std::string, pid_t>>& groups,
                                         const std::optional<std::pair<pid_t, pid_t>>& range) {
  std::vector<ProcessSample> out(groups.size());
  std::unordered_map<pid_t, std::size_t> by_group;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    out[i].service = groups[i].first;
    out[i].pid = groups[i].second;
    if (groups[i].second > 0) by_group[groups[i].second] = i;
  }
  if (by_group.empty()) return out;
  static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  char path[300];
  char buf[1024];
  procfs::for_each_pid_in(range, [&](pid_t pid) {
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (read_small(path, buf, sizeof buf) <= 0) return false;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    char* p = std::strrchr(buf, ')');
    if (!p) return false;
    // Fields from 3 (state) on; pgrp is field 5, utime 14, stime 15, threads 20, rss 24.
    char* fields[24] = {};
    int k = 3;
    // strtok_r, not strtok: metrics() may run on several threads at once, and strtok's
    // hidden state made them read each other's fields.
    char* save = nullptr;
    for (char* t = ::strtok_r(p + 2, " ", &save); t && k <= 24; t = ::strtok_r(nullptr, " ", &save))
      fields[k++ - 3] = t;
    if (k <= 24) return false;
    pid_t pgrp = static_cast<pid_t>(std::atol(fields[5 - 3]));
    auto it = by_group.find(pgrp);
    if (it == by_group.end()) return false;
    auto& s = out[it->second];
    s.processes += 1;
    s.cpu_seconds += static_cast<double>(std::atoll(fields[14 - 3]) + std::atoll(fields[15 - 3])) / ticks;
    s.threads += std::atoi(fields[20 - 3]);
    s.rss_bytes += static_cast<std::uint64_t>(std::atoll(fields[24 - 3])) * page;
    s.open_fds += procfs::open_fds(pid);
    return false;
  });
  return out;
}

bool has_marker(pid_t pid, const std::string& marker, std::string* service) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/environ", pid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // not ours to read, or gone
  static thread_local std::string env(256 * 1024, '\0');
  ssize_t n = ::read(fd, env.data(), env.size());
  ::close(fd);
  if (n <= 0) return false;
  std::string_view vars(env.data(), static_cast<std::size_t>(n));
  bool marked = false;
  for (std::size_t pos = 0; pos < vars.size();) {
    auto end = vars.find('\0', pos);
    if (end == std::string_view::npos) end = vars.size();
    auto var = vars.substr(pos, end - pos);
    if (var == marker) marked = true;
    if (service && var.rfind("CORRAL_SERVICE=", 0) == 0) *service = std::string(var.substr(15));
    pos = end + 1;
  }
  return marked;
}

std::vector<MarkedProcess> find_marked(const std::string& marker, const std::optional<std::pair<pid_t, pid_t>>& range,
                                       bool follow) {
  std::vector<MarkedProcess> out;
  const pid_t self = ::getpid();
  procfs::for_each_pid_in(range, [&](pid_t pid) {
    MarkedProcess m;
    if (pid == self || !has_marker(pid, marker, &m.service)) return false;
    m.pid = pid;
    m.command = procfs::comm(pid);
    out.push_back(std::move(m));
    return false;
  }, follow);
  return out;
}

}  // namespace corral
