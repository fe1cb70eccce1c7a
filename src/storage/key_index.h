// KeyIndex: an open-addressing hash index from a key to the object that holds it, for the
// hot tier. One 16-byte slot per position (the key's full hash and the object's address),
// linear probing, at most half full, deletion by shifting back (no tombstones). A lookup
// reads one slot, or a few neighbours on the same cache line, and then the object itself;
// the object's key is compared only when the full hash matches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

namespace petracache::storage {

// T must have `std::string_view key() const`. The index does not own the objects. Callers
// pass the key's hash (any well-mixed 64-bit hash, the same for equal keys).
template <typename T>
class KeyIndex {
 public:
  // Slots in use per object, at the lowest load after a growth: what an object costs here.
  static constexpr size_t kMaxSlotsPerObject = 4;
  static constexpr size_t kBytesPerObject = kMaxSlotsPerObject * 16;

  KeyIndex() { Reset(kMinCapacity); }
  KeyIndex(const KeyIndex&) = delete;
  KeyIndex& operator=(const KeyIndex&) = delete;

  size_t size() const { return size_; }
  size_t capacity() const { return mask_ + 1; }

  T* Find(std::string_view key, uint64_t hash) const {
    const size_t i = Locate(key, hash);
    return i == kAbsent ? nullptr : slots_[i].object;
  }

  // `object`'s key must not be in the index yet.
  void Insert(T* object, uint64_t hash) {
    if ((size_ + 1) * 2 > capacity()) Grow();
    Place(object, hash);
    ++size_;
  }

  // Removes the key's object, if any, and returns it.
  T* Erase(std::string_view key, uint64_t hash) {
    size_t i = Locate(key, hash);
    if (i == kAbsent) return nullptr;
    T* found = slots_[i].object;
    // Shift later members of the probe run back over the hole, each only if its home does
    // not lie after the hole (cyclically), so every object stays reachable from its home.
    for (size_t j = (i + 1) & mask_; slots_[j].object != nullptr; j = (j + 1) & mask_) {
      const size_t home = Home(slots_[j].hash);
      const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (stays) continue;
      slots_[i] = slots_[j];
      i = j;
    }
    slots_[i] = Slot{};
    --size_;
    return found;
  }

  // Forgets every object (it frees none of them) and returns to the smallest capacity.
  void Clear() { Reset(kMinCapacity); }

 private:
  struct Slot {
    uint64_t hash = 0;
    T* object = nullptr;
  };
  static constexpr size_t kMinCapacity = 64;
  static constexpr size_t kAbsent = ~size_t{0};

  // The slot holding the key, or kAbsent.
  size_t Locate(std::string_view key, uint64_t hash) const {
    for (size_t i = Home(hash);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.object == nullptr) return kAbsent;
      if (s.hash == hash && s.object->key() == key) return i;
    }
  }

  // Fibonacci hashing: the top bits of hash × 2^64/φ, so neighbouring or structured hashes
  // (the tier picks its shard from some of the same bits) still spread over the table.
  size_t Home(uint64_t hash) const {
    return static_cast<size_t>((hash * 0x9E3779B97F4A7C15ull) >> shift_);
  }

  void Place(T* object, uint64_t hash) {
    size_t i = Home(hash);
    while (slots_[i].object != nullptr) i = (i + 1) & mask_;
    slots_[i] = Slot{hash, object};
  }

  void Reset(size_t capacity) {
    slots_ = std::make_unique<Slot[]>(capacity);
    mask_ = capacity - 1;
    shift_ = 64;
    for (size_t c = capacity; c > 1; c >>= 1) --shift_;
    size_ = 0;
  }

  void Grow() {
    std::unique_ptr<Slot[]> old = std::move(slots_);
    const size_t old_capacity = capacity();
    const size_t count = size_;
    Reset(old_capacity * 2);
    for (size_t i = 0; i < old_capacity; ++i) {
      if (old[i].object != nullptr) Place(old[i].object, old[i].hash);
    }
    size_ = count;
  }

  std::unique_ptr<Slot[]> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t size_ = 0;
};

}  // namespace petracache::storage
