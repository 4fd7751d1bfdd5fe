#include "corral/resources/registry.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "corral/core/types.hpp"
#include "corral/resources/ports.hpp"

using namespace corral;

namespace {

// A type name no other test run uses, so runs in parallel never share a pool.
std::string unique_type(const std::string& what) {
  static std::atomic<int> n{0};
  return "test-" + what + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

ResourceType range_type(const std::string& name, long lo, long hi) {
  ResourceType t;
  t.name = name;
  t.kind = ResourceType::Kind::range;
  t.lo = lo;
  t.hi = hi;
  return t;
}

// The files of a test's own type: kept files of bounded pools would pile up run after run.
void remove_type_files(const std::string& type) {
  std::string prefix = type + "@";
  for (const auto& e : std::filesystem::directory_iterator(claims_dir()))
    if (e.path().filename().string().rfind(prefix, 0) == 0) std::filesystem::remove(e.path());
}

bool read_all(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

}  // namespace

// Two processes with two threads each allocate from one range at the same moment and keep
// what they got: no value is ever handed out twice. Several rounds, each on a fresh pool.
TEST(Registry, ConcurrentAllocatorsNeverShareAValue) {
  constexpr int kRounds = 8, kEach = 12, kCalls = 4;  // 2 procs x 2 threads x 4 x 12 = 192 of 200
  for (int round = 0; round < kRounds; ++round) {
    ResourceType t = range_type(unique_type("race"), 1000, 1199);
    int out[2], go[2], hold[2];
    ASSERT_EQ(::pipe(out), 0);
    ASSERT_EQ(::pipe(go), 0);
    ASSERT_EQ(::pipe(hold), 0);
    std::vector<pid_t> kids;
    for (int k = 0; k < 2; ++k) {
      pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        // Only the parent's ends stay open there: the child sees EOF on `hold` when the
        // parent closes it, and the parent sees the children's ends go.
        ::close(out[0]);
        ::close(go[1]);
        ::close(hold[1]);
        char c;
        if (::read(go[0], &c, 1) != 1) ::_exit(3);  // start together
        std::vector<Claim> mine[2];
        std::thread threads[2];
        for (int th = 0; th < 2; ++th)
          threads[th] = std::thread([&, th] {
            for (int i = 0; i < kCalls; ++i) {
              auto r = allocate(t, ClaimRequest{kEach, {}}, ClaimOwner{"s", "w"});
              for (auto& cl : r.claims) mine[th].push_back(std::move(cl));
            }
          });
        for (auto& th : threads) th.join();
        for (auto& m : mine)
          for (auto& cl : m) {
            int v = std::stoi(cl.value());
            if (::write(out[1], &v, sizeof v) != sizeof v) ::_exit(2);
          }
        int end = -1;
        if (::write(out[1], &end, sizeof end) != sizeof end) ::_exit(2);
        (void)::read(hold[0], &c, 1);  // keep the claims until the parent has counted
        ::_exit(0);
      }
      kids.push_back(pid);
    }
    ::close(out[1]);
    ASSERT_EQ(::write(go[1], "gg", 2), 2);
    std::multiset<int> seen;
    int ended = 0, v = 0;
    while (ended < 2 && read_all(out[0], &v, sizeof v)) {
      if (v < 0) ++ended;
      else seen.insert(v);
    }
    ::close(hold[1]);
    for (auto pid : kids) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ::close(out[0]);
    ::close(go[0]);
    ::close(go[1]);
    ::close(hold[0]);
    EXPECT_EQ(ended, 2);
    EXPECT_EQ(seen.size(), 2u * 2 * kCalls * kEach) << "round " << round;
    for (int x : seen) EXPECT_EQ(seen.count(x), 1u) << "value " << x << " handed out twice";
    remove_type_files(t.name);
  }
}

// Claim and release of one value from two threads, many times: the unlink under the lock
// never lets two holders in at once (a claimer that locked an unlinked inode starts over).
TEST(Registry, ReleaseByUnlinkNeverAdmitsTwoHolders) {
  std::string type = unique_type("unlink");
  std::atomic<int> holders{0}, overlaps{0}, got{0};
  auto run = [&] {
    for (int i = 0; i < 20000; ++i) {
      auto c = try_claim(type, "v", ClaimOwner{});
      if (!c) continue;
      ++got;
      if (holders.fetch_add(1) != 0) ++overlaps;
      for (int k = 0; k < 20; ++k) std::this_thread::yield();  // hold it a moment
      if (holders.load() != 1) ++overlaps;
      holders.fetch_sub(1);
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(run);
  for (auto& t : threads) t.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_GT(got.load(), 0);
}

TEST(Registry, SigkilledOwnersClaimsAreFreeAtOnce) {
  std::string type = unique_type("kill");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto c = try_claim(type, "gpu0", ClaimOwner{"dev", "train"});
    if (!c || ::write(ready[1], "x", 1) != 1) ::_exit(2);
    for (;;) ::pause();
  }
  char x;
  ASSERT_EQ(::read(ready[0], &x, 1), 1);
  auto h = claim_holder(type, "gpu0");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->pid, pid);
  EXPECT_EQ(h->stack, "dev");
  EXPECT_EQ(h->service, "train");
  EXPECT_EQ(describe_holder(*h), "stack 'dev', service 'train', pid " + std::to_string(pid));
  EXPECT_FALSE(try_claim(type, "gpu0", ClaimOwner{}).has_value());
  bool listed = false;
  for (const auto& r : list_claims()) listed = listed || (r.type == type && r.value == "gpu0" && r.pid == pid);
  EXPECT_TRUE(listed);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  EXPECT_TRUE(try_claim(type, "gpu0", ClaimOwner{}).has_value());
  EXPECT_FALSE(claim_holder(type, "gpu0").has_value());
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(Registry, ValueHeldByAForeignListenerIsSkipped) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(s, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ResourceType t = range_type(unique_type("port"), port, port);
  t.probe = ResourceType::Probe::tcp_port;
  auto r = allocate(t, ClaimRequest{1, {}}, ClaimOwner{});
  EXPECT_TRUE(r.claims.empty());
  EXPECT_TRUE(r.exhausted);
  auto given = allocate(t, ClaimRequest{1, {std::to_string(port)}}, ClaimOwner{});
  EXPECT_TRUE(given.claims.empty());
  EXPECT_NE(given.error.find("outside corral"), std::string::npos) << given.error;
  ::close(s);
  auto again = allocate(t, ClaimRequest{1, {}}, ClaimOwner{});
  ASSERT_EQ(again.claims.size(), 1u) << again.error;
  EXPECT_EQ(again.claims[0].value(), std::to_string(port));
  again.claims.clear();
  remove_type_files(t.name);
}

TEST(Registry, CheckCommandPicksOnlyValuesThatPass) {
  ResourceType t;
  t.name = unique_type("check");
  t.kind = ResourceType::Kind::list;
  t.values = {"a", "b", "c", "d"};
  t.check = "test {{value}} = c";
  for (int i = 0; i < 4; ++i) {  // whatever the random start
    auto r = allocate(t, ClaimRequest{1, {}}, ClaimOwner{});
    ASSERT_EQ(r.claims.size(), 1u) << r.error;
    EXPECT_EQ(r.claims[0].value(), "c");
  }
  auto two = allocate(t, ClaimRequest{2, {}}, ClaimOwner{});
  EXPECT_TRUE(two.claims.empty());
  EXPECT_TRUE(two.exhausted);
  remove_type_files(t.name);
}

TEST(Registry, CheckCommandTimesOut) {
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(run_check("sleep 30", "x", 0.3));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  EXPECT_TRUE(run_check("exit 0", "x", 5));
}

TEST(Registry, TakenGivenValueNamesItsHolder) {
  ResourceType t;
  t.name = unique_type("given");
  auto first = allocate(t, ClaimRequest{1, {"/srv/dev.db"}}, ClaimOwner{"dev", "db"});
  ASSERT_EQ(first.claims.size(), 1u);
  auto second = allocate(t, ClaimRequest{1, {"/srv/dev.db"}}, ClaimOwner{"other", "db2"});
  EXPECT_TRUE(second.claims.empty());
  EXPECT_TRUE(second.exhausted);  // a `wait` claim would wait for the holder
  EXPECT_NE(second.error.find("stack 'dev', service 'db', pid " + std::to_string(::getpid())), std::string::npos)
      << second.error;
}

TEST(Registry, KernelPortsGoThroughTheRegistry) {
  auto lease = allocate_port(ClaimOwner{"st", "web"});
  auto h = claim_holder("port", std::to_string(lease.port()));
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->service, "web");
  // A pinned claim of the same number is refused, naming the holder.
  try {
    claim_port(lease.port());
    FAIL() << "claimed twice";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("service 'web'"), std::string::npos) << e.what();
  }
}
