// KeyIndex against a model: random inserts, erases and lookups, with hashes forced to collide
// and to probe across the end of the table (where erasing must shift entries around the
// wrap), and with real hashes through several growths.
#include "storage/key_index.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace petracache::storage {
namespace {

struct Obj {
  std::string name;
  uint64_t hash;
  std::string_view key() const { return name; }
};

// The hash whose home slot, in a table of 64, is `home`: Home() keeps the top six bits of
// hash × K, so multiply (home << 58) by K's inverse modulo 2^64.
uint64_t HashWithHome(uint64_t home, uint64_t low_bits) {
  constexpr uint64_t kK = 0x9E3779B97F4A7C15ull;
  uint64_t inverse = kK;  // Newton: each step doubles the correct low bits
  for (int i = 0; i < 6; ++i) inverse *= 2 - kK * inverse;
  return ((home << 58) | (low_bits & ((uint64_t{1} << 58) - 1))) * inverse;
}

class KeyIndexModelTest : public ::testing::Test {
 protected:
  void Check() {
    ASSERT_EQ(index_.size(), model_.size());
    for (const auto& [name, obj] : all_) {
      Obj* found = index_.Find(name, obj->hash);
      auto it = model_.find(name);
      if (it == model_.end()) {
        ASSERT_EQ(found, nullptr) << name;
      } else {
        ASSERT_EQ(found, it->second) << name;
      }
    }
  }

  // Random operations over `all_` (every key's object made up front).
  void Run(int ops, size_t max_size, uint32_t seed, int check_every = 1) {
    std::mt19937 rng(seed);
    std::vector<Obj*> objs;
    for (auto& [name, obj] : all_) objs.push_back(obj.get());
    for (int op = 0; op < ops; ++op) {
      Obj* o = objs[rng() % objs.size()];
      const bool present = model_.contains(o->name);
      if (!present && model_.size() < max_size && rng() % 2 == 0) {
        index_.Insert(o, o->hash);
        model_[o->name] = o;
      } else {
        Obj* erased = index_.Erase(o->name, o->hash);
        ASSERT_EQ(erased, present ? o : nullptr) << o->name;
        model_.erase(o->name);
      }
      ASSERT_EQ(index_.Find(o->name, o->hash), model_.contains(o->name) ? o : nullptr);
      if (op % check_every == 0) Check();
      if (HasFatalFailure()) return;
    }
  }

  void Add(std::string name, uint64_t hash) {
    auto obj = std::make_unique<Obj>(Obj{name, hash});
    all_.emplace(std::move(name), std::move(obj));
  }

  KeyIndex<Obj> index_;
  std::map<std::string, Obj*> model_;
  std::map<std::string, std::unique_ptr<Obj>> all_;
};

TEST(KeyIndexTest, HashWithHomeHomesWhereAsked) {
  KeyIndex<Obj> index;
  ASSERT_EQ(index.capacity(), 64u);
  // Object at its home in an empty table, the next colliding one right after it (wrapping).
  Obj a{"a", HashWithHome(63, 1)}, b{"b", HashWithHome(63, 2)}, c{"c", HashWithHome(0, 3)};
  index.Insert(&a, a.hash);
  index.Insert(&b, b.hash);  // slot 0, the home of c
  index.Insert(&c, c.hash);  // slot 1
  EXPECT_EQ(index.Erase("a", a.hash), &a);  // b shifts back over the wrap to 63, c to 0
  EXPECT_EQ(index.Find("b", b.hash), &b);
  EXPECT_EQ(index.Find("c", c.hash), &c);
  EXPECT_EQ(index.Erase("b", b.hash), &b);
  EXPECT_EQ(index.Find("c", c.hash), &c);
  EXPECT_EQ(index.size(), 1u);
}

TEST_F(KeyIndexModelTest, CollidingHashesAcrossTheWrap) {
  // Homes 60..63 and 0..2 only, several keys per exact hash: long runs that wrap around the
  // end, equal hashes told apart by the key. At most 32 present: the table stays at 64.
  for (int i = 0; i < 48; ++i) {
    const uint64_t home = static_cast<uint64_t>((60 + i % 7) % 64);
    Add("k" + std::to_string(i), HashWithHome(home, static_cast<uint64_t>(i % 5)));
  }
  Run(20000, 32, 1);
  EXPECT_EQ(index_.capacity(), 64u);
}

TEST_F(KeyIndexModelTest, RealHashesThroughGrowthAndClear) {
  for (int i = 0; i < 3000; ++i) {
    std::string name = "key:" + std::to_string(i);
    Add(name, std::hash<std::string_view>{}(name));
  }
  Run(30000, 3000, 2, /*check_every=*/500);
  Check();
  EXPECT_GE(index_.capacity(), 2 * index_.size());  // at most half full
  index_.Clear();
  model_.clear();
  EXPECT_EQ(index_.capacity(), 64u);
  Check();
  Run(2000, 3000, 3, /*check_every=*/100);
}

}  // namespace
}  // namespace petracache::storage
