#include "corral/logs/log_file.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using corral::LogFile;
using corral::Stream;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/corral-logfile-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// 2026-11-30T07:53:52.123456Z
constexpr std::int64_t t0 = 1'796'025'232'123'456'789;

}  // namespace

TEST(LogFile, StampsEachLineWithUtcTimeAndStream) {
  TempDir dir;
  auto path = dir.path / "web.log";
  {
    LogFile f(path.string(), 0, 3);
    f.add(t0, Stream::out, "hello");
    f.add(t0 + 1'000'000'000, Stream::err, "bad \xff byte");
    ASSERT_TRUE(f.flush()) << f.error();
  }
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "2026-11-30T07:53:52.123456Z out hello");
  EXPECT_EQ(lines[1], "2026-11-30T07:53:53.123456Z err bad \xff byte");  // bytes as written
}

TEST(LogFile, AppendsAcrossReopensLikeAcrossRuns) {
  TempDir dir;
  auto path = dir.path / "web.log";
  for (int run = 0; run < 2; ++run) {
    LogFile f(path.string(), 0, 3);
    f.add(t0, Stream::out, "run " + std::to_string(run));
    ASSERT_TRUE(f.flush());
  }
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[1].find("run 1"), std::string::npos);
}

TEST(LogFile, RotatesBySizeAndKeepsOnlyKeepFiles) {
  TempDir dir;
  auto path = dir.path / "web.log";
  const std::string text(60, 'x');  // 60 + 32 bytes of stamp and stream per line
  {
    LogFile f(path.string(), 1000, 2);
    for (int i = 0; i < 100; ++i) {
      f.add(t0, Stream::out, text + std::to_string(i));
      ASSERT_TRUE(f.flush()) << f.error();  // one line per read of the pipe
    }
  }
  EXPECT_TRUE(fs::exists(path));
  EXPECT_TRUE(fs::exists(dir.path / "web.log.1"));
  EXPECT_TRUE(fs::exists(dir.path / "web.log.2"));
  EXPECT_FALSE(fs::exists(dir.path / "web.log.3"));
  for (const char* name : {"web.log", "web.log.1", "web.log.2"}) EXPECT_LE(fs::file_size(dir.path / name), 1000u);
  // The newest lines are in web.log, the ones before them in .1, then .2, with no gap.
  auto newest = lines_of(path);
  auto older = lines_of(dir.path / "web.log.1");
  ASSERT_FALSE(newest.empty());
  ASSERT_FALSE(older.empty());
  EXPECT_NE(newest.back().find(text + "99"), std::string::npos);
  auto number = [&](const std::string& line) { return std::stoi(line.substr(line.find(text) + text.size())); };
  EXPECT_EQ(number(older.back()) + 1, number(newest.front()));
}

TEST(LogFile, OneBigWriteIsSplitAcrossFilesOnLineBoundaries) {
  TempDir dir;
  auto path = dir.path / "web.log";
  {
    LogFile f(path.string(), 1000, 5);
    for (int i = 0; i < 40; ++i) f.add(t0, Stream::out, std::string(60, 'z') + std::to_string(i));
    ASSERT_TRUE(f.flush()) << f.error();  // all of it from one read of the pipe
  }
  std::size_t lines = 0;
  for (const char* name : {"web.log", "web.log.1", "web.log.2", "web.log.3"}) {
    ASSERT_TRUE(fs::exists(dir.path / name)) << name;
    EXPECT_LE(fs::file_size(dir.path / name), 1000u) << name;
    for (const auto& line : lines_of(dir.path / name)) {
      // Whole lines only: each starts with its stamp and holds all of its text.
      EXPECT_EQ(line.rfind("2026-11-30T07:53:52.123456Z out " + std::string(60, 'z'), 0), 0u) << line;
      ++lines;
    }
  }
  EXPECT_EQ(lines, 40u);
}

TEST(LogFile, KeepZeroTruncatesInPlace) {
  TempDir dir;
  auto path = dir.path / "web.log";
  LogFile f(path.string(), 500, 0);
  for (int i = 0; i < 50; ++i) {
    f.add(t0, Stream::out, std::string(50, 'y'));
    ASSERT_TRUE(f.flush());
  }
  EXPECT_LE(fs::file_size(path), 500u);
  EXPECT_FALSE(fs::exists(dir.path / "web.log.1"));
}

TEST(LogFile, RefusesASymlinkAndSaysWhy) {
  TempDir dir;
  auto target = dir.path / "victim";
  std::ofstream(target) << "precious\n";
  auto path = dir.path / "web.log";
  fs::create_symlink(target, path);
  LogFile f(path.string(), 0, 1);
  f.add(t0, Stream::out, "overwrite?");
  EXPECT_FALSE(f.flush());
  EXPECT_NE(f.error().find("web.log"), std::string::npos);
  EXPECT_EQ(lines_of(target), std::vector<std::string>{"precious"});
}

TEST(LogFile, AMissingDirectoryIsAnErrorNotACrash) {
  LogFile f("/nonexistent-corral-dir/web.log", 0, 1);
  f.add(t0, Stream::out, "x");
  EXPECT_FALSE(f.flush());
  EXPECT_NE(f.error().find("/nonexistent-corral-dir/web.log"), std::string::npos);
}
