// Helpers shared by the storage tests: a self-removing temporary directory and status macros.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#define PC_ASSERT_OK(expr)                      \
  do {                                          \
    const auto& pc_status_ = (expr);            \
    ASSERT_TRUE(pc_status_.ok()) << pc_status_; \
  } while (0)

#define PC_EXPECT_OK(expr)                      \
  do {                                          \
    const auto& pc_status_ = (expr);            \
    EXPECT_TRUE(pc_status_.ok()) << pc_status_; \
  } while (0)

namespace petracache::storage {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/petracache-storage-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed";
      return;
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace petracache::storage
