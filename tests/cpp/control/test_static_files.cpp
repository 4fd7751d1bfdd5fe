// The dashboard's files as the control server loads them: plain regular files of one
// directory only, with their content types and ETags.
#include "corral/control/static_files.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace corral::control;
namespace fs = std::filesystem;

namespace {
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "corral-static-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& body) const { std::ofstream(path / name) << body; }
};
}  // namespace

TEST(StaticFiles, LoadsOnlyPlainRegularFilesOfTheDirectory) {
  TempDir d;
  d.write("index.html", "<p>hi</p>");
  d.write("app.js", "export {};");
  d.write(".secret", "no");
  d.write("big.txt", std::string(100, 'x'));
  fs::create_directory(d.path / "sub");
  d.write("sub/inner.js", "no");
  TempDir outside;
  outside.write("token", "secret");
  fs::create_symlink(outside.path / "token", d.path / "link.txt");
  auto files = load_static_files(d.path.string(), 64);
  EXPECT_EQ(files.size(), 2u);
  ASSERT_TRUE(files.count("index.html"));
  EXPECT_EQ(files.at("index.html").body, "<p>hi</p>");
  EXPECT_EQ(files.at("index.html").content_type, "text/html; charset=utf-8");
  EXPECT_EQ(files.at("app.js").content_type, "text/javascript; charset=utf-8");
  EXPECT_FALSE(files.count(".secret"));
  EXPECT_FALSE(files.count("big.txt"));   // over the size limit
  EXPECT_FALSE(files.count("link.txt"));  // a symlink is never followed
  EXPECT_FALSE(files.count("sub"));
  EXPECT_TRUE(load_static_files((d.path / "missing").string()).empty());
  EXPECT_TRUE(load_static_files("").empty());
}

TEST(StaticFiles, EtagsChangeWithTheBodyAndMatchIfNoneMatch) {
  TempDir d;
  d.write("a.css", "body {}");
  d.write("b.css", "body { }");
  auto files = load_static_files(d.path.string());
  const auto& a = files.at("a.css").etag;
  EXPECT_NE(a, files.at("b.css").etag);
  EXPECT_EQ(a.front(), '"');
  EXPECT_TRUE(etag_matches(a, a));
  EXPECT_TRUE(etag_matches("\"x\", W/" + a, a));
  EXPECT_TRUE(etag_matches("*", a));
  EXPECT_FALSE(etag_matches("", a));
  EXPECT_FALSE(etag_matches(files.at("b.css").etag, a));
  EXPECT_EQ(static_content_type("x.svg"), "image/svg+xml");
  EXPECT_EQ(static_content_type("x.bin"), "application/octet-stream");
}
