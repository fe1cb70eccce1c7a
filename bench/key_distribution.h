// Key choice for the load generator: a fast PRNG, an exact Zipf sampler, and the key naming
// scheme (prefix + fixed-width decimal id) shared by request encoding and reply checking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace petracache::bench {

// GCC's 128-bit integer; __extension__ keeps -Wpedantic quiet about it.
__extension__ typedef unsigned __int128 Uint128;

// xoshiro256** seeded through splitmix64: a few ns per number, good enough statistics for
// choosing keys and operations, and independent streams per thread from distinct seeds.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, 1).
  double NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias below n / 2^64).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<Uint128>(Next()) * n) >> 64);
  }

 private:
  uint64_t s_[4];
};

// Samples ranks 0..n-1 with P(rank k) proportional to 1/(k+1)^exponent, exactly, in O(1)
// expected time per sample (Hörmann & Derflinger's rejection-inversion, as in Apache Commons
// RNG's RejectionInversionZipfSampler). Works for any exponent > 0, including 1.
class ZipfSampler {
 public:
  ZipfSampler(uint64_t n, double exponent);
  uint64_t Sample(Rng& rng) const;

 private:
  double H(double x) const;
  double HIntegral(double x) const;
  double HIntegralInverse(double x) const;

  uint64_t n_;
  double exponent_;
  double h_integral_x1_;
  double h_integral_n_;
  double s_;
};

// Which key an operation touches: uniform over [0, keys) or Zipf-ranked. Zipf ranks are
// scattered over the id space by a bijection (rank * prime mod keys) so the hot keys are not
// neighbours in the store's key order (which would make a block cache look better than it is).
class KeyChooser {
 public:
  // spec: "uniform", "zipf" (exponent 0.99) or "zipf:<exponent>". Returns false on a bad spec.
  [[nodiscard]] static bool ParseSpec(std::string_view spec, bool* zipf, double* exponent);

  KeyChooser(uint64_t keys, bool zipf, double exponent);
  uint64_t Next(Rng& rng) const { return Next(rng, nullptr); }
  // Also reports the key's popularity rank (0 = most popular; uniform: the id itself).
  uint64_t Next(Rng& rng, uint64_t* rank) const;

 private:
  uint64_t keys_;
  bool zipf_;
  ZipfSampler sampler_;
};

// Key text: prefix followed by the id zero-padded to kIdDigits digits ("key:0000012345"), so
// every key of a run has the same length and requests of one kind the same size.
class KeyFormat {
 public:
  static constexpr size_t kIdDigits = 10;

  explicit KeyFormat(std::string prefix) : prefix_(std::move(prefix)) {}

  size_t length() const { return prefix_.size() + kIdDigits; }
  const std::string& prefix() const { return prefix_; }
  // Appends the key of `id` (id < 10^kIdDigits).
  void Append(uint64_t id, std::string* out) const;
  // The id of a key this format produced; false for any other text.
  [[nodiscard]] bool Parse(std::string_view key, uint64_t* id) const;

 private:
  std::string prefix_;
};

}  // namespace petracache::bench
