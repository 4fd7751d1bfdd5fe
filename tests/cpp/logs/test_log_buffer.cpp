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

namespace {
// Every piece must be valid UTF-8 on its own when the input is.
bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    std::size_t len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}
}  // namespace

TEST(LineSplitter, CutsOnCharacterBoundaries) {
  // "é" is 2 bytes, "€" 3, "😀" 4: with a cap of 5, each character type straddles some cut.
  for (std::string ch : {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"}) {
    std::string line = "a";
    for (int i = 0; i < 20; ++i) line += ch;
    // Fed whole, and fed one byte at a time (the character then begins in an earlier read).
    for (bool bytewise : {false, true}) {
      LineSplitter s(5);
      std::vector<std::string> out;
      auto emit = [&](std::string_view l) { out.emplace_back(l); };
      if (bytewise) {
        for (char c : line + "\n") s.feed(std::string_view(&c, 1), emit);
      } else {
        s.feed(line + "\n", emit);
      }
      std::string joined;
      for (const auto& piece : out) {
        EXPECT_LE(piece.size(), 5u);
        EXPECT_FALSE(piece.empty());
        EXPECT_TRUE(valid_utf8(piece)) << "split character in piece of " << ch;
        joined += piece;
      }
      EXPECT_EQ(joined, line);
    }
  }
}

TEST(LineSplitter, InvalidBytesAreCutAtTheCap) {
  // Continuation bytes with no lead byte: nothing to keep together, the cap still holds.
  LineSplitter s(4);
  EXPECT_EQ(split(s, {"\x80\x80\x80\x80\x80\x80\n"}),
            (std::vector<std::string>{"\x80\x80\x80\x80", "\x80\x80"}));
  LineSplitter t(1);
  EXPECT_EQ(split(t, {"\xc3\xa9\n"}), (std::vector<std::string>{"\xc3", "\xa9"}));
}
