// BPE merging as tokenizers' models/bpe (merge_word, Word::merge_all), with a bounded per-thread
// cache of word -> ids (words repeat: the cache skips the merge loop for most of a corpus).
#include "data/bpe.h"

#include <algorithm>
#include <atomic>
#include <memory>

#include "data/utf8.h"
#include "util/check.h"

namespace meshtrain::data {

namespace {

constexpr size_t kMaxCachedWordBytes = 256;  // tokenizers caches words shorter than 256 chars
constexpr size_t kCacheEntries = 1 << 16;    // the cache is cleared when it reaches this size

uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return k;
}

// Word -> ids, the ids of all entries in one pool; emptied when full.
class WordCache {
 public:
  bool lookup(std::string_view word, std::vector<int32_t>& out) const {
    const auto it = map_.find(word);
    if (it == map_.end()) return false;
    out.insert(out.end(), pool_.begin() + it->second.first,
               pool_.begin() + it->second.first + it->second.second);
    return true;
  }
  void insert(std::string_view word, const int32_t* ids, size_t n) {
    if (map_.size() >= kCacheEntries) {
      map_.clear();
      pool_.clear();
    }
    map_.emplace(std::string(word), std::make_pair(static_cast<uint32_t>(pool_.size()), static_cast<uint32_t>(n)));
    pool_.insert(pool_.end(), ids, ids + n);
  }

 private:
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> map_;
  std::vector<int32_t> pool_;
};

// This thread's cache for model `instance` (a few models per thread at most are kept).
WordCache& local_cache(uint64_t instance) {
  thread_local std::vector<std::pair<uint64_t, std::unique_ptr<WordCache>>> caches;
  for (auto& [id, cache] : caches)
    if (id == instance) return *cache;
  if (caches.size() >= 4) caches.erase(caches.begin());
  caches.emplace_back(instance, std::make_unique<WordCache>());
  return *caches.back().second;
}

struct Symbol {
  int32_t id;
  int32_t prev, next;  // neighbours' indices, -1 at the ends
  int32_t len;         // bytes covered; 0 once merged into its left neighbour
};

struct Merge {
  int32_t pos, rank, new_id;
  // the heap pops the largest: lowest rank first, then lowest position.
  bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

std::string byte_token(unsigned b) {
  static const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
}

}  // namespace

BpeModel::BpeModel(StringIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  static std::atomic<uint64_t> next_instance{1};
  instance_ = next_instance++;
  if (options_.unk_token) {
    const auto it = vocab_.find(*options_.unk_token);
    MT_CHECK(it != vocab_.end(), "tokenizer.json: BPE unk_token '", *options_.unk_token,
             "' is not in the vocabulary");
    unk_id_ = it->second;
  }
  for (unsigned b = 0; b < 256; ++b) {
    const auto it = vocab_.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
    const auto fb = vocab_.find(byte_token(b));
    fallback_ids_[b] = fb == vocab_.end() ? -1 : fb->second;
  }
  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  merge_keys_.assign(capacity, 0);
  merge_values_.resize(capacity);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = vocab_.find(a), ib = vocab_.find(b), ic = vocab_.find(a + b);
    MT_CHECK(ia != vocab_.end() && ib != vocab_.end(), "tokenizer.json: BPE merge ", rank, " ('", a,
             "', '", b, "') names a token that is not in the vocabulary");
    MT_CHECK(ic != vocab_.end(), "tokenizer.json: BPE merge ", rank, " ('", a, "', '", b,
             "') makes a token that is not in the vocabulary");
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32 |
                          static_cast<uint32_t>(ib->second)) + 1;
    size_t slot = mix(key) & (capacity - 1);
    while (merge_keys_[slot] != 0 && merge_keys_[slot] != key) slot = (slot + 1) & (capacity - 1);
    if (merge_keys_[slot] == key) continue;  // a repeated pair keeps its first (lowest) rank
    merge_keys_[slot] = key;
    merge_values_[slot] = {static_cast<int32_t>(rank), ic->second};
  }
}

std::optional<int32_t> BpeModel::find(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

bool BpeModel::lookup_merge(int32_t left, int32_t right, int32_t& rank, int32_t& new_id) const {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right)) + 1;
  const size_t mask = merge_keys_.size() - 1;
  for (size_t slot = mix(key) & mask;; slot = (slot + 1) & mask) {
    if (merge_keys_[slot] == key) {
      rank = merge_values_[slot].first;
      new_id = merge_values_[slot].second;
      return true;
    }
    if (merge_keys_[slot] == 0) return false;
  }
}

int32_t BpeModel::symbol_id(std::string_view symbol) const {
  if (symbol.size() == 1) return byte_ids_[static_cast<unsigned char>(symbol[0])];
  const auto it = vocab_.find(symbol);
  return it == vocab_.end() ? -1 : it->second;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    const auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  WordCache& cache = local_cache(instance_);
  if (cache.lookup(word, out)) return;
  const size_t before = out.size();
  merge_word(word, out);
  if (word.size() < kMaxCachedWordBytes) cache.insert(word, out.data() + before, out.size() - before);
}

// tokenizers' merge_word: characters to symbols (byte fallback, fused unk), then merge_all.
void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Merge> queue;  // a binary heap (std::push_heap), reused
  symbols.clear();
  const auto add = [&](int32_t id, size_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, static_cast<int32_t>(len)});
  };
  int32_t pending_unk_len = 0;  // bytes of an unk symbol not yet added
  for (size_t i = 0; i < w.size();) {
    size_t len = 1;
    if (!options_.byte_symbols) len = std::max<size_t>(1, utf8_char_len(w, i));
    const std::string_view s = w.substr(i, len);
    i += len;
    const int32_t id = symbol_id(s);
    if (id >= 0) {
      if (pending_unk_len > 0) add(unk_id_, pending_unk_len);
      pending_unk_len = 0;
      add(id, len);
      continue;
    }
    if (options_.byte_fallback &&
        std::all_of(s.begin(), s.end(), [&](char c) { return fallback_ids_[static_cast<unsigned char>(c)] >= 0; })) {
      for (char c : s) add(fallback_ids_[static_cast<unsigned char>(c)], 1);
      continue;  // as tokenizers: a pending unk stays pending across byte tokens
    }
    if (unk_id_ < 0) continue;  // no unk token: the character is dropped, as upstream
    if (pending_unk_len > 0 && !options_.fuse_unk) add(unk_id_, pending_unk_len), pending_unk_len = 0;
    pending_unk_len += static_cast<int32_t>(len);
  }
  if (pending_unk_len > 0) add(unk_id_, pending_unk_len);

  queue.clear();
  const auto push = [&](Merge m) {
    queue.push_back(m);
    std::push_heap(queue.begin(), queue.end());
  };
  int32_t rank, new_id;
  for (size_t p = 0; p + 1 < symbols.size(); ++p)
    if (lookup_merge(symbols[p].id, symbols[p + 1].id, rank, new_id)) push({static_cast<int32_t>(p), rank, new_id});
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end());
    const Merge top = queue.back();
    queue.pop_back();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const Symbol right = symbols[cur.next];
    if (!lookup_merge(cur.id, right.id, rank, new_id) || new_id != top.new_id) continue;  // stale
    symbols[cur.next].len = 0;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0 && lookup_merge(symbols[cur.prev].id, cur.id, rank, new_id))
      push({cur.prev, rank, new_id});
    if (cur.next >= 0 && lookup_merge(cur.id, symbols[cur.next].id, rank, new_id))
      push({top.pos, rank, new_id});
  }
  for (const Symbol& s : symbols)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace meshtrain::data
