// The machine-wide registry of resource claims (ports, GPUs, paths, any named value).
//
// A claim on (type, value) is an flock(LOCK_EX) on the file <runtime dir>/claims/<type>@<value>,
// held by the owning process for as long as the claim lives. The kernel keeps that lock
// exactly as long as the open file description, so a SIGKILLed owner's claims vanish with
// it: no sweeper, no pid that could be recycled. The file's content (type, value, pid,
// process start time, boot id, stack, service) is only for display and error messages.
//
// Unlink-after-lock: a released claim's file of a free-form type (paths, names: no bound
// on how many) is unlinked while its lock is still held, so a claimer that opened the old
// inode just before would lock a file nobody can find. So a claimer checks, after locking,
// that the path still names the inode it locked (fstat vs stat) and starts over when it
// does not. Files of bounded pools (ranges, lists, ports) are kept for the next claim:
// creating and deleting an inode per claim costs milliseconds on a busy ext4 /tmp.
//
// Safe across threads (every call opens its own file description), processes, users'
// stacks and pytest-xdist workers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "corral/spawn/spawn.hpp"

namespace corral {

// A pool of values. Built in: port (kernel-chosen, what ports=[...] uses), tcpport,
// vncport, serialport (ranges probed by a bind test), path (free-form, must not exist).
struct ResourceType {
  enum class Kind : std::uint8_t { free, range, list, kernel_port };
  enum class Probe : std::uint8_t { none, tcp_port, path };
  std::string name;
  Kind kind = Kind::free;
  long lo = 0, hi = -1;             // range, both ends included
  std::vector<std::string> values;  // list
  std::string check;                // /bin/sh -c command, {{value}} filled in; exit 0 = usable
  std::string env;                  // also exported under this name, comma-joined
  double timeout = 10.0;            // seconds for one check
  Probe probe = Probe::none;
};

// The built-in type of that name, if it is one.
std::optional<ResourceType> builtin_resource_type(const std::string& name);

// Who claims: written into the claim file for display.
struct ClaimOwner {
  std::string stack;
  std::string service;
};

// What a claim file says, and whether its lock is held now.
struct ClaimRecord {
  std::string type, value, stack, service, boot_id;
  pid_t pid = 0;
  std::uint64_t start_time = 0;  // of the pid, in clock ticks since boot (/proc/PID/stat)
  bool live = false;
};

// "stack 'dev', service 'db', pid 123" (or what is known of it).
std::string describe_holder(const ClaimRecord& r);

// A held claim. Move-only; releasing it (or destroying it) unlinks its file under the lock.
class Claim {
 public:
  Claim() = default;
  Claim(std::string type, std::string value, std::string path, Fd fd, bool keep_file)
      : type_(std::move(type)), value_(std::move(value)), path_(std::move(path)), fd_(std::move(fd)),
        keep_file_(keep_file) {}
  Claim(Claim&&) noexcept = default;
  Claim& operator=(Claim&& o) noexcept {
    if (this != &o) {
      release();
      type_ = std::move(o.type_);
      value_ = std::move(o.value_);
      path_ = std::move(o.path_);
      fd_ = std::move(o.fd_);
      keep_file_ = o.keep_file_;
    }
    return *this;
  }
  ~Claim() { release(); }
  const std::string& type() const noexcept { return type_; }
  const std::string& value() const noexcept { return value_; }
  explicit operator bool() const noexcept { return static_cast<bool>(fd_); }
  void release() noexcept;

 private:
  std::string type_, value_, path_;
  Fd fd_;
  bool keep_file_ = false;  // a value of a bounded pool: the file stays for the next claim
};

// <runtime dir>/claims, private. Throws corral::Error when the runtime directory is unsafe.
std::string claims_dir();

// Claims (type, value) if nobody holds it; nullopt when someone does. No probe, no check.
// `keep_file`: the value belongs to a bounded pool, so its file is not unlinked on release.
// Throws corral::Error when the claim file cannot be opened.
std::optional<Claim> try_claim(const std::string& type, const std::string& value, const ClaimOwner& owner,
                               bool keep_file = false);

// The live holder of (type, value), if any.
std::optional<ClaimRecord> claim_holder(const std::string& type, const std::string& value);

// Every live claim on the machine (this user's runtime directory), sorted by type, value.
// Never takes a lock: liveness is read from /proc/locks, so listing never makes a
// concurrent claimer fail.
std::vector<ClaimRecord> list_claims();

// Runs `command` with {{value}} replaced through /bin/sh -c, output to /dev/null, and
// waits up to `timeout` seconds (then kills its process group). True on exit 0. Blocking:
// never call it on the engine thread.
bool run_check(const std::string& command, const std::string& value, double timeout);

// Whether the OS says the value is free: a bind test for ports, lstat for paths.
bool probe_free(const ResourceType& t, const std::string& value);

struct ClaimRequest {
  int count = 1;
  std::vector<std::string> given;  // explicit values (then count is ignored)
};

struct AllocationResult {
  std::vector<Claim> claims;
  std::string error;       // empty on success
  // No free value now, or a given value is held by another claim: a wait may help. False
  // when the OS or a check refused the value (a wait would not change that).
  bool exhausted = false;
};

// Claims `count` values of `t` (or the given ones). Scans from a random start so that
// concurrent allocators rarely meet; skips values held by a claim, refused by the probe,
// or failing the check (which runs while the value is already locked). All or nothing.
// Runs check commands: blocking when t.check is set.
AllocationResult allocate(const ResourceType& t, const ClaimRequest& req, const ClaimOwner& owner);

}  // namespace corral
