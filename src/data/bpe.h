// The BPE model of Hugging Face tokenizers: a word is split into characters (bytes for
// byte-level vocabularies), unknown ones go to <0xNN> byte tokens or the unk token, then merges
// apply lowest rank first, leftmost first among equals, exactly as tokenizers' Word::merge_all.
// Thread-safe: the word cache is per thread.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace meshtrain::data {

// Hashes std::string and std::string_view alike, so lookups need no temporary string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  bool byte_symbols = false;  // initial symbols are single bytes (byte-level vocabularies)
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;  // a word found whole in the vocabulary is one token
  std::optional<std::string> unk_token;
};

class BpeModel {
 public:
  // `vocab` maps each token (in model space: raw bytes for byte-level vocabularies) to its id;
  // `merges` are token pairs in rank order. A merge naming a token outside the vocabulary, or
  // whose concatenation is not in it, is an error.
  BpeModel(StringIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           BpeOptions options);

  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  std::optional<int32_t> find(std::string_view token) const;
  const StringIdMap& vocab() const { return vocab_; }

 private:
  struct MergeTable;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  int32_t symbol_id(std::string_view symbol) const;  // -1 when not in the vocabulary
  bool lookup_merge(int32_t left, int32_t right, int32_t& rank, int32_t& new_id) const;

  StringIdMap vocab_;
  BpeOptions options_;
  int32_t unk_id_ = -1;
  int32_t byte_ids_[256];           // the vocabulary id of each single byte, or -1
  int32_t fallback_ids_[256];       // the id of <0xNN>, or -1
  std::vector<uint64_t> merge_keys_;  // open addressing: (left << 32 | right) + 1, 0 = empty
  std::vector<std::pair<int32_t, int32_t>> merge_values_;  // rank, merged id
  uint64_t instance_;               // keys this model's per-thread word cache
};

}  // namespace meshtrain::data
