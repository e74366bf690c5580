// See tokenizer.hpp for the two merge semantics. Prompts are a few dozen characters, so the merge
// loops are the plain quadratic ones: clearer than a priority queue, and fast enough per step.
#include "tokenizer.hpp"

#include "../error.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>

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

bool python_is_blank(const std::vector<uint32_t> & cps) {
    // Python's str.isspace() set (what str.strip() removes)
    auto space = [](uint32_t c) {
        return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
               (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
               c == 0x3000;
    };
    return std::all_of(cps.begin(), cps.end(), space);
}

tokenizer::tokenizer(const model & m) {
    const gguf_context * g = m.gguf();
    const int64_t kt = m.find_key("tokenizer.ggml.tokens");
    if (kt < 0) fail(OMNIMODEL_ERR_NOT_FOUND, "the model has no vocabulary (tokenizer.ggml.tokens); re-export it");
    if (gguf_get_kv_type(g, kt) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, kt) != GGUF_TYPE_STRING) {
        fail(OMNIMODEL_ERR_FORMAT, "tokenizer.ggml.tokens is not an array of strings");
    }
    const size_t n = gguf_get_arr_n(g, kt);
    tokens_.reserve(n);
    for (size_t i = 0; i < n; ++i) tokens_.emplace_back(gguf_get_arr_str(g, kt, i));

    types_.assign(n, NORMAL);
    const int64_t ky = m.find_key("tokenizer.ggml.token_type");
    if (ky < 0) fail(OMNIMODEL_ERR_NOT_FOUND, "tokenizer.ggml.token_type is missing; re-export the model");
    if (gguf_get_arr_type(g, ky) != GGUF_TYPE_INT32 || gguf_get_arr_n(g, ky) != n) {
        fail(OMNIMODEL_ERR_FORMAT, format("tokenizer.ggml.token_type must be %zu int32 values", n));
    }
    std::memcpy(types_.data(), gguf_get_arr_data(g, ky), n * sizeof(int32_t));
    unk_id_           = static_cast<int32_t>(m.get_int("tokenizer.ggml.unknown_token_id", 0));
    add_space_prefix_ = m.get_int("tokenizer.ggml.add_space_prefix", 1) != 0;

    for (size_t i = 0; i < n; ++i) {
        // the first id wins for duplicate pieces, as in both Python tokenizers
        ids_.emplace(tokens_[i], static_cast<int32_t>(i));
    }
    for (int b = 0; b < 256; ++b) {
        auto it      = ids_.find(byte_piece(static_cast<uint8_t>(b)));
        byte_ids_[b] = it == ids_.end() ? -1 : it->second;
    }

    const int64_t km = m.find_key("tokenizer.ggml.merges");
    const int64_t ks = m.find_key("tokenizer.ggml.scores");
    if (km >= 0) {
        hf_mode_ = true;
        if (gguf_get_arr_type(g, km) != GGUF_TYPE_STRING) fail(OMNIMODEL_ERR_FORMAT, "tokenizer.ggml.merges is not an array of strings");
        const size_t nm = gguf_get_arr_n(g, km);
        for (size_t r = 0; r < nm; ++r) {
            const std::string s   = gguf_get_arr_str(g, km, r);
            const size_t      sep = s.find(' ');
            if (sep == std::string::npos) fail(OMNIMODEL_ERR_FORMAT, format("tokenizer.ggml.merges[%zu] is not 'left right'", r));
            const int32_t a = piece_id(s.substr(0, sep)), b = piece_id(s.substr(sep + 1));
            if (a < 0 || b < 0 || piece_id(s.substr(0, sep) + s.substr(sep + 1)) < 0) continue;  // HF skips these too
            merge_rank_.emplace(std::make_pair(a, b), static_cast<int32_t>(r));
        }
        for (size_t i = 0; i < n; ++i) {
            // tokenizer.json lists <unk>, <s>, </s> (and any added token) as added tokens, all matched in raw text
            if (types_[i] == CONTROL || types_[i] == USER_DEFINED || types_[i] == UNKNOWN) specials_.emplace_back(tokens_[i], static_cast<int32_t>(i));
        }
    } else if (ks >= 0) {
        if (gguf_get_arr_type(g, ks) != GGUF_TYPE_FLOAT32 || gguf_get_arr_n(g, ks) != n) {
            fail(OMNIMODEL_ERR_FORMAT, format("tokenizer.ggml.scores must be %zu float32 values", n));
        }
        scores_.resize(n);
        std::memcpy(scores_.data(), gguf_get_arr_data(g, ks), n * sizeof(float));
    } else {
        fail(OMNIMODEL_ERR_NOT_FOUND, "the vocabulary has neither tokenizer.ggml.merges nor tokenizer.ggml.scores; re-export the model");
    }
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

void tokenizer::encode_segment(const std::vector<uint32_t> & cps_in, std::vector<int32_t> & out) const {
    if (cps_in.empty()) return;
    // normalisation shared by both: "▁" prefix, spaces -> "▁"
    std::vector<uint32_t> cps;
    cps.reserve(cps_in.size() + 1);
    if (add_space_prefix_) cps.push_back(0x2581);
    for (uint32_t c : cps_in) cps.push_back(c == 0x20 ? 0x2581 : c);

    if (hf_mode_) {
        // symbols are ids; a character outside the vocabulary becomes its byte pieces (which merge
        // with nothing unless a merge names them)
        std::vector<int32_t> sym;
        for (uint32_t c : cps) {
            const std::string ch = utf8_encode({c});
            const int32_t     id = piece_id(ch);
            if (id >= 0) {
                sym.push_back(id);
            } else {
                std::vector<int32_t> bytes;
                byte_fallback(ch, bytes);
                // HF fuses consecutive unknowns (fuse_unk) when bytes are missing
                for (int32_t b : bytes) {
                    if (b == unk_id_ && !sym.empty() && sym.back() == unk_id_) continue;
                    sym.push_back(b);
                }
            }
        }
        for (;;) {
            int32_t best_rank = std::numeric_limits<int32_t>::max();
            size_t  best      = 0;
            for (size_t i = 0; i + 1 < sym.size(); ++i) {
                auto it = merge_rank_.find({sym[i], sym[i + 1]});
                if (it != merge_rank_.end() && it->second < best_rank) {
                    best_rank = it->second;
                    best      = i;
                }
            }
            if (best_rank == std::numeric_limits<int32_t>::max()) break;
            sym[best] = piece_id(tokens_[static_cast<size_t>(sym[best])] + tokens_[static_cast<size_t>(sym[best + 1])]);
            sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(best) + 1);
        }
        out.insert(out.end(), sym.begin(), sym.end());
        return;
    }

    // SentencePiece BPE: symbols are text; merge the pair whose concatenation is the best-scoring
    // ordinary piece
    std::vector<std::string> sym;
    for (uint32_t c : cps) sym.push_back(utf8_encode({c}));
    auto mergeable = [&](const std::string & s, float & score) {
        const int32_t id = piece_id(s);
        if (id < 0) return false;
        const int32_t t = types_[static_cast<size_t>(id)];
        if (t != NORMAL && t != USER_DEFINED && t != UNUSED) return false;
        score = scores_[static_cast<size_t>(id)];
        return true;
    };
    for (;;) {
        float  best_score = -std::numeric_limits<float>::infinity();
        size_t best       = sym.size();
        for (size_t i = 0; i + 1 < sym.size(); ++i) {
            float s;
            if (mergeable(sym[i] + sym[i + 1], s) && (best == sym.size() || s > best_score)) {
                best_score = s;
                best       = i;
            }
        }
        if (best == sym.size()) break;
        sym[best] += sym[best + 1];
        sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    }
    for (const std::string & s : sym) {
        const int32_t id = piece_id(s);
        if (id >= 0 && types_[static_cast<size_t>(id)] != CONTROL && types_[static_cast<size_t>(id)] != BYTE) {
            out.push_back(id);
        } else {
            byte_fallback(s, out);
        }
    }
}

std::vector<int32_t> tokenizer::encode(const std::string & text) const {
    std::vector<int32_t> out;
    if (!hf_mode_ || specials_.empty()) {
        encode_segment(utf8_decode(text, "text"), out);
        return out;
    }
    // Cut special tokens out of the raw text, leftmost-longest, as tokenizers' AddedVocabulary does;
    // the normaliser (and so the "▁" prefix) then applies to each piece in between.
    utf8_decode(text, "text");  // validate once; specials are whole code points, so cuts stay valid
    size_t pos = 0, seg = 0;
    while (pos < text.size()) {
        size_t best_len = 0;
        int32_t best_id = -1;
        for (const auto & [piece, id] : specials_) {
            if (piece.size() > best_len && text.compare(pos, piece.size(), piece) == 0) {
                best_len = piece.size();
                best_id  = id;
            }
        }
        if (best_id < 0) {
            ++pos;
            continue;
        }
        encode_segment(utf8_decode(text.substr(seg, pos - seg), "text"), out);
        out.push_back(best_id);
        pos += best_len;
        seg = pos;
    }
    encode_segment(utf8_decode(text.substr(seg), "text"), out);
    return out;
}

}  // namespace omni::vla
