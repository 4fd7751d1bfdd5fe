#include "corral/logs/log_buffer.hpp"

#include <gtest/gtest.h>

using namespace corral;

namespace {
std::vector<std::string> split(LineSplitter& s, std::vector<std::string_view> chunks, bool finish = false) {
  std::vector<std::string> out;
  for (auto c : chunks) s.feed(c, [&](std::string_view l) { out.emplace_back(l); });
  if (finish) s.finish([&](std::string_view l) { out.emplace_back(l); });
  return out;
}
}  // namespace

TEST(LineSplitter, JoinsPartialLinesAndStripsCR) {
  LineSplitter s;
  EXPECT_EQ(split(s, {"hel", "lo\nwor", "ld\r\n", "\n", "tail"}, true),
            (std::vector<std::string>{"hello", "world", "", "tail"}));
}

TEST(LineSplitter, CutsEndlessLines) {
  LineSplitter s(4);
  EXPECT_EQ(split(s, {"abcdefghij\nxy", "z\n"}), (std::vector<std::string>{"abcd", "efgh", "ij", "xyz"}));
}

TEST(LogRing, BoundedByLinesAndBytes) {
  LogRing r(3, 1000);
  for (int i = 0; i < 10; ++i) r.push(i, Stream::out, "line " + std::to_string(i));
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r.tail(-1).front().text, "line 7");
  EXPECT_EQ(r.tail(1).front().seq, 9u);
  EXPECT_EQ(r.dropped(), 7u);

  LogRing b(100, 10);
  b.push(0, Stream::err, "12345");
  b.push(0, Stream::err, "67890");
  b.push(0, Stream::err, "abc");
  EXPECT_LE(b.bytes(), 10u);
  EXPECT_EQ(b.tail(-1).back().text, "abc");
}
