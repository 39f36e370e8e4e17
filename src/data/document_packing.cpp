#include "data/document_packing.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <utility>

#include "util/check.h"

namespace meshtrain::data {

namespace {

constexpr int64_t kIgnoreIndex = -100;  // nn::kIgnoreIndex: data/ sits below nn/

}  // namespace

PackedDocuments::PackedDocuments(const TokenDataset& data, int64_t seq_len, int64_t eos_token_id)
    : data_(data), seq_len_(seq_len), eos_(eos_token_id) {
  MT_CHECK(seq_len_ >= 2, "--packing: seq_len must be >= 2, got ", seq_len_);
  MT_CHECK(eos_ >= 0, "--packing: the EOS id that ends each document must be >= 0, got ", eos_);
  // Documents: runs ending with EOS (the last one may lack it), cut into pieces of <= seq_len.
  std::vector<Piece> pieces;
  auto add_document = [&](int64_t start, int64_t end) {
    ++documents_;
    if (end - start > seq_len_) ++split_;
    for (int64_t s = start; s < end; s += seq_len_) pieces.push_back({s, std::min(seq_len_, end - s)});
  };
  constexpr int64_t kChunk = 1 << 20;
  std::vector<int64_t> buf(kChunk);
  int64_t doc_start = 0;
  for (int64_t at = 0; at < data_.size(); at += kChunk) {
    const int64_t n = std::min(kChunk, data_.size() - at);
    data_.read_into(at, n, buf.data());
    for (int64_t i = 0; i < n; ++i)
      if (buf[i] == eos_) {
        add_document(doc_start, at + i + 1);
        doc_start = at + i + 1;
      }
  }
  if (doc_start < data_.size()) add_document(doc_start, data_.size());

  // Best-fit decreasing: longest first (ties in data order), each into the window with the least
  // room that still fits it (ties: the earliest window), else a new window.
  std::vector<size_t> order(pieces.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return pieces[a].length > pieces[b].length; });
  std::vector<std::vector<Piece>> windows;
  std::set<std::pair<int64_t, int64_t>> room;  // (free tokens, window)
  for (size_t i : order) {
    const auto& p = pieces[i];
    tokens_ += p.length;
    auto fit = room.lower_bound({p.length, -1});
    int64_t w;
    int64_t free_after;
    if (fit == room.end()) {
      w = static_cast<int64_t>(windows.size());
      windows.emplace_back();
      free_after = seq_len_ - p.length;
    } else {
      w = fit->second;
      free_after = fit->first - p.length;
      room.erase(fit);
    }
    windows[w].push_back(p);
    if (free_after > 0) room.insert({free_after, w});
  }
  MT_CHECK(!windows.empty(), "--packing: the dataset has no documents");
  window_begin_.push_back(0);
  for (auto& w : windows) {
    pieces_.insert(pieces_.end(), w.begin(), w.end());
    window_begin_.push_back(static_cast<int64_t>(pieces_.size()));
  }
}

void PackedDocuments::read(int64_t window, int64_t* input_ids, int64_t* position_ids, int64_t* targets) const {
  MT_CHECK(window >= 0 && window < num_windows(), "packed window ", window, " outside [0, ", num_windows(), ")");
  int64_t at = 0;
  for (int64_t i = window_begin_[window]; i < window_begin_[window + 1]; ++i) {
    const auto& p = pieces_[i];
    data_.read_into(p.start, p.length, input_ids + at);
    for (int64_t t = 0; t < p.length; ++t) {
      position_ids[at + t] = t;
      targets[at + t] = t + 1 < p.length ? input_ids[at + t + 1] : kIgnoreIndex;
    }
    at += p.length;
  }
  for (int64_t t = at; t < seq_len_; ++t) {  // padding: one more document that nothing learns from
    input_ids[t] = eos_;
    position_ids[t] = t - at;
    targets[t] = kIgnoreIndex;
  }
}

}  // namespace meshtrain::data
