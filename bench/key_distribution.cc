// Key choice for the load generator: PRNG, Zipf sampler, key naming.
#include "key_distribution.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace petracache::bench {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// log1p(x)/x and expm1(x)/x, continuous at 0 (Taylor series near it).
double Helper1(double x) {
  if (std::fabs(x) > 1e-8) return std::log1p(x) / x;
  return 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}
double Helper2(double x) {
  if (std::fabs(x) > 1e-8) return std::expm1(x) / x;
  return 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

// A prime above every possible key count (ids have 10 digits), used to scatter Zipf ranks:
// rank * kScatterPrime mod keys is a bijection of [0, keys) because the two are coprime.
constexpr uint64_t kScatterPrime = 10'000'000'019ULL;

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t state = seed;
  for (uint64_t& word : s_) word = SplitMix64(&state);
}

uint64_t Rng::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

ZipfSampler::ZipfSampler(uint64_t n, double exponent) : n_(n), exponent_(exponent) {
  h_integral_x1_ = HIntegral(1.5) - 1.0;
  h_integral_n_ = HIntegral(static_cast<double>(n_) + 0.5);
  s_ = 2.0 - HIntegralInverse(HIntegral(2.5) - H(2.0));
}

double ZipfSampler::H(double x) const { return std::exp(-exponent_ * std::log(x)); }

double ZipfSampler::HIntegral(double x) const {
  const double log_x = std::log(x);
  return Helper2((1.0 - exponent_) * log_x) * log_x;
}

double ZipfSampler::HIntegralInverse(double x) const {
  double t = x * (1.0 - exponent_);
  if (t < -1.0) t = -1.0;  // rounding can push it just past the pole
  return std::exp(Helper1(t) * x);
}

uint64_t ZipfSampler::Sample(Rng& rng) const {
  for (;;) {
    const double u = h_integral_n_ + rng.NextDouble() * (h_integral_x1_ - h_integral_n_);
    const double x = HIntegralInverse(u);
    double k = std::floor(x + 0.5);
    if (k < 1.0) {
      k = 1.0;
    } else if (k > static_cast<double>(n_)) {
      k = static_cast<double>(n_);
    }
    if (k - x <= s_ || u >= HIntegral(k + 0.5) - H(k)) return static_cast<uint64_t>(k) - 1;
  }
}

bool KeyChooser::ParseSpec(std::string_view spec, bool* zipf, double* exponent) {
  if (spec == "uniform") {
    *zipf = false;
    *exponent = 0.0;
    return true;
  }
  if (spec == "zipf") {
    *zipf = true;
    *exponent = 0.99;
    return true;
  }
  if (spec.substr(0, 5) != "zipf:") return false;
  const std::string number(spec.substr(5));
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (number.empty() || *end != '\0' || !(value > 0.0) || value > 10.0) return false;
  *zipf = true;
  *exponent = value;
  return true;
}

KeyChooser::KeyChooser(uint64_t keys, bool zipf, double exponent)
    : keys_(keys), zipf_(zipf), sampler_(keys, zipf ? exponent : 1.0) {}

uint64_t KeyChooser::Next(Rng& rng, uint64_t* rank_out) const {
  if (!zipf_) {
    const uint64_t id = rng.Below(keys_);
    if (rank_out != nullptr) *rank_out = id;
    return id;
  }
  const uint64_t rank = sampler_.Sample(rng);
  if (rank_out != nullptr) *rank_out = rank;
  return static_cast<uint64_t>((static_cast<Uint128>(rank) * kScatterPrime) % keys_);
}

void KeyFormat::Append(uint64_t id, std::string* out) const {
  out->append(prefix_);
  char digits[kIdDigits];
  for (size_t i = kIdDigits; i-- > 0;) {
    digits[i] = static_cast<char>('0' + id % 10);
    id /= 10;
  }
  out->append(digits, kIdDigits);
}

bool KeyFormat::Parse(std::string_view key, uint64_t* id) const {
  if (key.size() != length() || key.substr(0, prefix_.size()) != prefix_) return false;
  uint64_t value = 0;
  for (char c : key.substr(prefix_.size())) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  *id = value;
  return true;
}

}  // namespace petracache::bench
