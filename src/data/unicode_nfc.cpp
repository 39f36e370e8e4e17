#include "data/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "data/utf8.h"

namespace meshtrain::data {

namespace {

struct CombiningClass {
  uint32_t cp;
  uint8_t ccc;
};
struct Decomposition {
  uint32_t cp, first, second;  // second 0: a singleton
};
struct Composition {
  uint32_t first, second, composite;
};

#include "data/unicode_nfc_tables.inc"

// Hangul syllables (Unicode 3.12): S = SBase + (L·VCount + V)·TCount + T.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kSCount = kLCount * kVCount * kTCount;

struct Mark {
  uint32_t cp;
  uint8_t ccc;
};

uint8_t combining_class(uint32_t cp) {
  auto it = std::lower_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                             [](const CombiningClass& c, uint32_t v) { return c.cp < v; });
  return it != std::end(kCombiningClasses) && it->cp == cp ? it->ccc : 0;
}

void decompose(uint32_t cp, std::vector<Mark>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back({kLBase + s / (kVCount * kTCount), 0});
    out.push_back({kVBase + (s % (kVCount * kTCount)) / kTCount, 0});
    if (s % kTCount != 0) out.push_back({kTBase + s % kTCount, 0});
    return;
  }
  auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                             [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  if (it == std::end(kDecompositions) || it->cp != cp) {
    out.push_back({cp, combining_class(cp)});
    return;
  }
  decompose(it->first, out);
  if (it->second != 0) decompose(it->second, out);
}

// The primary composite of (first, second), or 0.
uint32_t compose(uint32_t first, uint32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && second > kTBase &&
      second < kTBase + kTCount)
    return first + (second - kTBase);
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::pair{first, second},
                             [](const Composition& c, const std::pair<uint32_t, uint32_t>& v) {
                               return std::pair{c.first, c.second} < v;
                             });
  return it != std::end(kCompositions) && it->first == first && it->second == second ? it->composite : 0;
}

// Decomposed, reordered and composed marks -> UTF-8 appended to out.
void normalize_run(std::vector<Mark>& marks, std::string& out) {
  for (size_t i = 1; i < marks.size(); ++i)  // canonical ordering: stable by class between starters
    for (size_t j = i; j > 0 && marks[j].ccc != 0 && marks[j - 1].ccc > marks[j].ccc; --j)
      std::swap(marks[j - 1], marks[j]);
  std::vector<Mark> composed;
  composed.reserve(marks.size());
  ptrdiff_t starter = -1;
  for (const Mark& m : marks) {
    // Marks between the starter and m are in nondecreasing class order, so m is blocked unless
    // it follows the starter or the last of them has a lower class.
    if (starter >= 0 && (composed.size() == static_cast<size_t>(starter) + 1 ||
                         (composed.back().ccc != 0 && composed.back().ccc < m.ccc))) {
      if (uint32_t c = compose(composed[starter].cp, m.cp)) {
        composed[starter].cp = c;
        continue;
      }
    }
    if (m.ccc == 0) starter = static_cast<ptrdiff_t>(composed.size());
    composed.push_back(m);
  }
  for (const Mark& m : composed) utf8_append(out, m.cp);
  marks.clear();
}

}  // namespace

void to_nfc(std::string_view text, std::string& out) {
  out.clear();
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    out.assign(text);
    return;
  }
  std::vector<Mark> marks;
  for (size_t i = 0; i < text.size();) {
    const unsigned char byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {  // ASCII: a starter that composes with nothing before it
      normalize_run(marks, out);
      size_t end = i;
      while (end < text.size() && static_cast<unsigned char>(text[end]) < 0x80) ++end;
      // The last ASCII letter may still take a following combining mark.
      out.append(text.substr(i, end - i - 1));
      marks.push_back({static_cast<uint32_t>(text[end - 1]), 0});
      i = end;
      continue;
    }
    const size_t len = utf8_char_len(text, i);
    if (len == 0) {  // ill-formed: copied as it is
      normalize_run(marks, out);
      out.push_back(text[i++]);
      continue;
    }
    decompose(utf8_decode(text, i, len), marks);
    i += len;
  }
  normalize_run(marks, out);
}

}  // namespace meshtrain::data
