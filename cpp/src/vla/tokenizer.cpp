// See tokenizer.hpp for the two merge semantics. Both merge loops run on a priority queue over the
// adjacent pairs of a linked list of symbols: O(n log n) in the text length, so a hostile megabyte
// costs about a second, not hours. The queue orders pairs exactly as the plain loop "scan every pair,
// take the best, leftmost on ties" would pick them; entries made stale by a merge are skipped on pop.
#include "tokenizer.hpp"

#include "../error.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <queue>

namespace omni::vla {

namespace {

struct lower_run {
    uint32_t first, last;
    int32_t  delta;
    uint32_t step;
};
struct cp_range {
    uint32_t first, last;
};
#include "unicode_tables.inc"

template <size_t N>
bool in_ranges(const cp_range (&r)[N], uint32_t c) {
    const cp_range * it = std::upper_bound(r, r + N, c, [](uint32_t v, const cp_range & x) { return v < x.first; });
    return it != r && c <= (it - 1)->last;
}

uint32_t simple_lower(uint32_t c) {
    const size_t n  = sizeof(k_lower_runs) / sizeof(k_lower_runs[0]);
    const auto * it = std::upper_bound(k_lower_runs, k_lower_runs + n, c,
                                       [](uint32_t v, const lower_run & x) { return v < x.first; });
    if (it == k_lower_runs) return c;
    const lower_run & r = *(it - 1);
    if (c > r.last || (c - r.first) % r.step != 0) return c;
    return static_cast<uint32_t>(static_cast<int64_t>(c) + r.delta);
}

// Python's handle_capital_sigma: Σ is final when preceded by a cased letter and not followed by
// one, skipping case-ignorable characters on both sides.
bool final_sigma(const std::vector<uint32_t> & s, size_t i) {
    size_t j = i;
    uint32_t c = 0;
    bool found = false;
    while (j > 0) {
        c = s[--j];
        if (!in_ranges(k_case_ignorable, c)) {
            found = true;
            break;
        }
    }
    if (!found || !in_ranges(k_cased, c)) return false;
    for (j = i + 1; j < s.size(); ++j) {
        if (!in_ranges(k_case_ignorable, s[j])) return !in_ranges(k_cased, s[j]);
    }
    return true;
}

std::string byte_piece(uint8_t b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    return buf;
}

const std::string k_space_piece = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space

}  // namespace

std::vector<uint32_t> utf8_decode(const std::string & s, const char * what) {
    std::vector<uint32_t> out;
    out.reserve(s.size());
    const auto * p = reinterpret_cast<const unsigned char *>(s.data());
    const size_t n = s.size();
    for (size_t i = 0; i < n;) {
        const unsigned char b = p[i];
        int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
        if (len == 0 || i + len > n) {
            fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("%s is not valid UTF-8 (byte %zu)", what, i));
        }
        uint32_t c = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
        for (int k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("%s is not valid UTF-8 (byte %zu)", what, i));
            c = (c << 6) | (p[i + k] & 0x3F);
        }
        const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (c < min_for_len[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
            fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("%s is not valid UTF-8 (byte %zu)", what, i));
        }
        out.push_back(c);
        i += static_cast<size_t>(len);
    }
    return out;
}

std::string utf8_encode(const std::vector<uint32_t> & cps) {
    std::string out;
    for (uint32_t c : cps) {
        if (c < 0x80) {
            out += static_cast<char>(c);
        } else if (c < 0x800) {
            out += static_cast<char>(0xC0 | (c >> 6));
            out += static_cast<char>(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out += static_cast<char>(0xE0 | (c >> 12));
            out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (c & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (c >> 18));
            out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (c & 0x3F));
        }
    }
    return out;
}

std::vector<uint32_t> python_lower(const std::vector<uint32_t> & cps) {
    std::vector<uint32_t> out;
    out.reserve(cps.size());
    for (size_t i = 0; i < cps.size(); ++i) {
        const uint32_t c = cps[i];
        if (c == 0x130) {  // the one lowering to two code points: İ -> i + combining dot above
            out.push_back(0x69);
            out.push_back(0x307);
        } else if (c == 0x3A3) {
            out.push_back(final_sigma(cps, i) ? 0x3C2 : 0x3C3);
        } else {
            out.push_back(simple_lower(c));
        }
    }
    return out;
}

bool python_is_space(uint32_t c) {
    // Python's str.isspace() set (what str.strip() removes)
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool python_is_blank(const std::vector<uint32_t> & cps) { return std::all_of(cps.begin(), cps.end(), python_is_space); }

namespace {

// A string array of the vocabulary, its kv and element types checked before anything is read.
int64_t string_array_key(const model & m, const char * key, bool required) {
    const gguf_context * g  = m.gguf();
    const int64_t        id = m.find_key(key);
    if (id < 0) {
        if (required) fail(OMNIMODEL_ERR_NOT_FOUND, format("the model has no vocabulary (%s); re-export it", key));
        return -1;
    }
    if (gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != GGUF_TYPE_STRING) {
        fail(OMNIMODEL_ERR_FORMAT, format("%s is not an array of strings", key));
    }
    return id;
}

// A numeric array of exactly n elements of type want, or FORMAT.
const void * typed_array(const model & m, int64_t id, const char * key, gguf_type want, size_t n) {
    const gguf_context * g = m.gguf();
    if (gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != want || gguf_get_arr_n(g, id) != n) {
        fail(OMNIMODEL_ERR_FORMAT, format("%s must be %zu %s values", key, n, gguf_type_name(want)));
    }
    return n == 0 ? nullptr : gguf_get_arr_data(g, id);
}

size_t utf8_chars(const std::string & s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

}  // namespace

tokenizer::tokenizer(const model & m) {
    const gguf_context * g  = m.gguf();
    const int64_t        kt = string_array_key(m, "tokenizer.ggml.tokens", true);
    const size_t         n  = gguf_get_arr_n(g, kt);
    if (n == 0 || n > static_cast<size_t>(INT32_MAX)) fail(OMNIMODEL_ERR_FORMAT, "tokenizer.ggml.tokens is empty or too large");
    tokens_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        tokens_.emplace_back(gguf_get_arr_str(g, kt, i));
        max_piece_chars_ = std::max(max_piece_chars_, utf8_chars(tokens_.back()));
    }

    types_.assign(n, NORMAL);
    const int64_t ky = m.find_key("tokenizer.ggml.token_type");
    if (ky < 0) fail(OMNIMODEL_ERR_NOT_FOUND, "tokenizer.ggml.token_type is missing; re-export the model");
    std::memcpy(types_.data(), typed_array(m, ky, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, n), n * sizeof(int32_t));
    unk_id_           = static_cast<int32_t>(m.get_int_in("tokenizer.ggml.unknown_token_id", 0, 0, static_cast<int64_t>(n) - 1));
    add_space_prefix_ = m.get_int("tokenizer.ggml.add_space_prefix", 1) != 0;

    for (size_t i = 0; i < n; ++i) {
        // the first id wins for duplicate pieces, as in both Python tokenizers
        ids_.emplace(tokens_[i], static_cast<int32_t>(i));
    }
    for (int b = 0; b < 256; ++b) {
        auto it      = ids_.find(byte_piece(static_cast<uint8_t>(b)));
        byte_ids_[b] = it == ids_.end() ? -1 : it->second;
    }

    const int64_t km = string_array_key(m, "tokenizer.ggml.merges", false);
    const int64_t ks = m.find_key("tokenizer.ggml.scores");
    if (km >= 0) {
        hf_mode_ = true;
        const size_t nm = gguf_get_arr_n(g, km);
        for (size_t r = 0; r < nm && r < static_cast<size_t>(INT32_MAX); ++r) {
            const std::string s   = gguf_get_arr_str(g, km, r);
            const size_t      sep = s.find(' ');
            if (sep == std::string::npos) fail(OMNIMODEL_ERR_FORMAT, format("tokenizer.ggml.merges[%zu] is not 'left right'", r));
            const int32_t a = piece_id(s.substr(0, sep)), b = piece_id(s.substr(sep + 1));
            const int32_t c = piece_id(s.substr(0, sep) + s.substr(sep + 1));
            if (a < 0 || b < 0 || c < 0) continue;  // HF skips these too
            merges_.emplace(pair_key(a, b), merge{static_cast<int32_t>(r), c});
        }
        for (size_t i = 0; i < n; ++i) {
            // tokenizer.json lists <unk>, <s>, </s> (and any added token) as added tokens, all matched in raw text
            if ((types_[i] == CONTROL || types_[i] == USER_DEFINED || types_[i] == UNKNOWN) && !tokens_[i].empty()) {
                add_special(tokens_[i], static_cast<int32_t>(i));
            }
        }
    } else if (ks >= 0) {
        scores_.resize(n);
        std::memcpy(scores_.data(), typed_array(m, ks, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, n), n * sizeof(float));
        for (size_t i = 0; i < n; ++i) {
            // the merge order compares scores: a NaN would make it meaningless
            if (!std::isfinite(scores_[i])) fail(OMNIMODEL_ERR_FORMAT, format("tokenizer.ggml.scores[%zu] is not finite", i));
            // SentencePiece matches user-defined pieces whole in the normalised text (PaliGemma's "\n")
            if (types_[i] == USER_DEFINED && !tokens_[i].empty()) add_special(tokens_[i], static_cast<int32_t>(i));
        }
    } else {
        fail(OMNIMODEL_ERR_NOT_FOUND, "the vocabulary has neither tokenizer.ggml.merges nor tokenizer.ggml.scores; re-export the model");
    }
}

void tokenizer::add_special(const std::string & piece, int32_t id) {
    if (trie_.empty()) trie_.emplace_back();
    size_t node = 0;
    for (unsigned char c : piece) {
        auto it = trie_[node].next.find(c);
        if (it == trie_[node].next.end()) {
            trie_.emplace_back();
            it = trie_[node].next.emplace(c, trie_.size() - 1).first;
        }
        node = it->second;
    }
    if (trie_[node].id < 0) trie_[node].id = id;  // the first id wins, as for ordinary pieces
}

size_t tokenizer::longest_special(const std::string & text, size_t pos, int32_t & id) const {
    size_t best = 0, node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
        auto it = trie_[node].next.find(static_cast<unsigned char>(text[i]));
        if (it == trie_[node].next.end()) break;
        node = it->second;
        if (trie_[node].id >= 0) {
            best = i + 1 - pos;
            id   = trie_[node].id;
        }
    }
    return best;
}

int32_t tokenizer::piece_id(const std::string & piece) const {
    auto it = ids_.find(piece);
    return it == ids_.end() ? -1 : it->second;
}

void tokenizer::byte_fallback(const std::string & text, std::vector<int32_t> & out) const {
    for (unsigned char b : text) {
        if (byte_ids_[b] < 0) {  // a vocabulary without byte pieces: the whole symbol is unknown
            out.push_back(unk_id_);
            return;
        }
    }
    for (unsigned char b : text) out.push_back(byte_ids_[b]);
}

namespace {

// One symbol of the text being merged: a byte range of the normalised text (and, in HF mode, its
// id), linked to its neighbours. A merged-away symbol has len 0.
struct symbol {
    size_t  start = 0, len = 0;
    int32_t id = -1;
    int64_t prev = -1, next = -1;
};

// A candidate merge of symbols left and right. `order` ranks candidates (lower merges first: the HF
// rank, or the negated SentencePiece score); ties go to the leftmost, i.e. the lower symbol index.
struct candidate {
    double  order;
    int64_t left, right;
    size_t  len;       // SentencePiece: the merged byte length, to detect a stale entry
    int32_t a, b, to;  // HF: the ids it joins and the id it makes
};

struct later {
    bool operator()(const candidate & x, const candidate & y) const {
        return x.order != y.order ? x.order > y.order : x.left > y.left;
    }
};

using queue = std::priority_queue<candidate, std::vector<candidate>, later>;

void unlink_right(std::vector<symbol> & sym, int64_t left, int64_t right) {
    sym[static_cast<size_t>(left)].len += sym[static_cast<size_t>(right)].len;
    sym[static_cast<size_t>(right)].len = 0;
    const int64_t after = sym[static_cast<size_t>(right)].next;
    sym[static_cast<size_t>(left)].next = after;
    if (after >= 0) sym[static_cast<size_t>(after)].prev = left;
}

}  // namespace

void tokenizer::encode_segment(const std::vector<uint32_t> & cps_in, std::vector<int32_t> & out) const {
    if (cps_in.empty()) return;
    // normalisation shared by both: "▁" prefix, spaces -> "▁"
    std::vector<uint32_t> cps;
    cps.reserve(cps_in.size() + 1);
    if (add_space_prefix_) cps.push_back(0x2581);
    for (uint32_t c : cps_in) cps.push_back(c == 0x20 ? 0x2581 : c);

    std::vector<symbol> sym;
    std::string         text;  // the normalised text the symbols' byte ranges point into
    sym.reserve(cps.size());
    auto push = [&](const std::string & bytes, int32_t id) {
        symbol s;
        s.start = text.size();
        s.len   = bytes.size();
        s.id    = id;
        s.prev  = static_cast<int64_t>(sym.size()) - 1;
        if (!sym.empty()) sym.back().next = static_cast<int64_t>(sym.size());
        text += bytes;
        sym.push_back(s);
    };

    if (hf_mode_) {
        // symbols are ids; a character outside the vocabulary becomes its byte pieces (which merge
        // with nothing unless a merge names them)
        for (uint32_t c : cps) {
            const std::string ch = utf8_encode({c});
            const int32_t     id = piece_id(ch);
            if (id >= 0) {
                push(ch, id);
                continue;
            }
            std::vector<int32_t> bytes;
            byte_fallback(ch, bytes);
            // HF fuses consecutive unknowns (fuse_unk) when bytes are missing
            for (int32_t b : bytes) {
                if (b == unk_id_ && !sym.empty() && sym.back().id == unk_id_) continue;
                push(tokens_[static_cast<size_t>(b)], b);
            }
        }
        queue q;
        auto offer = [&](int64_t l) {
            const int64_t r = l < 0 ? -1 : sym[static_cast<size_t>(l)].next;
            if (r < 0) return;
            const int32_t a = sym[static_cast<size_t>(l)].id, b = sym[static_cast<size_t>(r)].id;
            auto it = merges_.find(pair_key(a, b));
            if (it != merges_.end()) q.push({static_cast<double>(it->second.rank), l, r, 0, a, b, it->second.to});
        };
        for (size_t i = 0; i + 1 < sym.size(); ++i) offer(static_cast<int64_t>(i));
        while (!q.empty()) {
            const candidate c = q.top();
            q.pop();
            symbol & l = sym[static_cast<size_t>(c.left)];
            if (l.len == 0 || l.next != c.right || l.id != c.a || sym[static_cast<size_t>(c.right)].id != c.b) continue;
            unlink_right(sym, c.left, c.right);
            l.id = c.to;
            offer(l.prev);
            offer(c.left);
        }
        for (int64_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) out.push_back(sym[static_cast<size_t>(i)].id);
        return;
    }

    // SentencePiece BPE: symbols are text, one per code point except user-defined pieces, which are
    // matched longest-first and frozen (never merged); merge the pair whose concatenation is the
    // best-scoring ordinary piece
    std::vector<bool> frozen;
    if (trie_.empty()) {
        for (uint32_t c : cps) push(utf8_encode({c}), -1);
        frozen.assign(sym.size(), false);
    } else {
        const std::string norm = utf8_encode(cps);
        for (size_t pos = 0; pos < norm.size();) {
            int32_t      id  = -1;
            const size_t len = longest_special(norm, pos, id);
            size_t       n   = len;
            if (n == 0) {  // one code point (norm is valid UTF-8)
                n = 1;
                while (pos + n < norm.size() && (static_cast<unsigned char>(norm[pos + n]) & 0xC0) == 0x80) ++n;
            }
            push(norm.substr(pos, n), -1);
            frozen.push_back(len > 0);
            pos += n;
        }
    }
    // Pairs that make an UNUSED piece may merge, but the piece is never emitted: it is split back into
    // the two symbols it was last offered from (SentencePiece's resegmentation).
    std::unordered_map<std::string, std::pair<std::string, std::string>> rev_merge;
    queue q;
    auto offer = [&](int64_t l) {
        const int64_t r = l < 0 ? -1 : sym[static_cast<size_t>(l)].next;
        if (r < 0 || frozen[static_cast<size_t>(l)] || frozen[static_cast<size_t>(r)]) return;
        const size_t  len = sym[static_cast<size_t>(l)].len + sym[static_cast<size_t>(r)].len;
        const std::string piece = text.substr(sym[static_cast<size_t>(l)].start, len);
        const int32_t id  = piece_id(piece);
        if (id < 0) return;
        const int32_t t = types_[static_cast<size_t>(id)];
        if (t != NORMAL && t != USER_DEFINED && t != UNUSED) return;
        if (t == UNUSED) {
            rev_merge[piece] = {text.substr(sym[static_cast<size_t>(l)].start, sym[static_cast<size_t>(l)].len),
                                text.substr(sym[static_cast<size_t>(r)].start, sym[static_cast<size_t>(r)].len)};
        }
        q.push({-static_cast<double>(scores_[static_cast<size_t>(id)]), l, r, len, -1, -1, id});
    };
    for (size_t i = 0; i + 1 < sym.size(); ++i) offer(static_cast<int64_t>(i));
    while (!q.empty()) {
        const candidate c = q.top();
        q.pop();
        const symbol & l = sym[static_cast<size_t>(c.left)];
        if (l.len == 0 || l.next != c.right || l.len + sym[static_cast<size_t>(c.right)].len != c.len) continue;
        unlink_right(sym, c.left, c.right);
        offer(sym[static_cast<size_t>(c.left)].prev);
        offer(c.left);
    }
    std::function<void(const std::string &)> emit = [&](const std::string & s) {
        const int32_t id = piece_id(s);
        if (id >= 0 && types_[static_cast<size_t>(id)] == UNUSED) {
            auto it = rev_merge.find(s);
            if (it != rev_merge.end()) {
                const auto halves = it->second;  // copied: the recursion may not outlive the map entry
                emit(halves.first);
                emit(halves.second);
                return;
            }
        }
        if (id >= 0 && types_[static_cast<size_t>(id)] != CONTROL && types_[static_cast<size_t>(id)] != BYTE) {
            out.push_back(id);
        } else {
            byte_fallback(s, out);
        }
    };
    for (int64_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) {
        emit(text.substr(sym[static_cast<size_t>(i)].start, sym[static_cast<size_t>(i)].len));
    }
}

std::vector<int32_t> tokenizer::encode(const std::string & text) const {
    std::vector<int32_t> out;
    if (!hf_mode_ || trie_.empty()) {
        encode_segment(utf8_decode(text, "text"), out);
        return out;
    }
    // Cut special tokens out of the raw text, leftmost-longest, as tokenizers' AddedVocabulary does;
    // the normaliser (and so the "▁" prefix) then applies to each piece in between.
    utf8_decode(text, "text");  // validate once; specials are whole code points, so cuts stay valid
    size_t pos = 0, seg = 0;
    while (pos < text.size()) {
        int32_t      id  = -1;
        const size_t len = longest_special(text, pos, id);
        if (len == 0) {
            ++pos;
            continue;
        }
        encode_segment(utf8_decode(text.substr(seg, pos - seg), "text"), out);
        out.push_back(id);
        pos += len;
        seg = pos;
    }
    encode_segment(utf8_decode(text.substr(seg), "text"), out);
    return out;
}

}  // namespace omni::vla
