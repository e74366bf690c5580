// Llama (SentencePiece-style) tokenisation in C++ from the vocabulary stored in the GGUF, so a
// robot needs no Python to turn an instruction into token ids.
//
// The file carries tokenizer.ggml.{tokens, token_type} and either
//   merges: ranked "left right" pairs from tokenizer.json. Hugging Face BPE semantics: special
//           (added) tokens are cut out of the raw text first, each remaining segment gets the "▁"
//           prefix and spaces -> "▁", then the adjacent pair with the lowest rank merges (leftmost
//           on ties) until none applies; characters outside the vocabulary become <0xXX> byte pieces.
//   scores: from tokenizer.model. SentencePiece BPE semantics: the whole text is one segment (with
//           the "▁" prefix unless tokenizer.ggml.add_space_prefix is false, spaces -> "▁"), split into
//           code points except user-defined pieces (token_type 4, e.g. PaliGemma's "\n"), which are
//           matched longest-first and never merged; the adjacent pair whose concatenation is a normal
//           piece with the highest score merges first; an UNUSED piece so made is split back into its
//           halves; leftover symbols outside the vocabulary become byte pieces.
// Both are what the Python side (python/omnimodel/arch/openvla_oft/tokenizer.py) runs.
#pragma once

#include "../model.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace omni::vla {

// UTF-8 <-> code points. Decoding fails with INVALID_ARGUMENT naming `what` on malformed input.
std::vector<uint32_t> utf8_decode(const std::string & s, const char * what);
std::string           utf8_encode(const std::vector<uint32_t> & cps);

// Python's str.lower() (full Unicode, Final_Sigma included), whether a code point is one str.strip()
// removes, and whether str.strip() would leave nothing.
std::vector<uint32_t> python_lower(const std::vector<uint32_t> & cps);
bool                  python_is_space(uint32_t c);
bool                  python_is_blank(const std::vector<uint32_t> & cps);

class tokenizer {
public:
    explicit tokenizer(const model & m);  // FORMAT / NOT_FOUND when the vocabulary is missing or bad

    // Token ids of `text` (UTF-8), without BOS: what the Python encoder yields for it.
    std::vector<int32_t> encode(const std::string & text) const;
    int32_t              piece_id(const std::string & piece) const;  // -1 when absent
    size_t               size() const { return tokens_.size(); }
    // The most code points one piece covers: n characters need at least n / max_piece_chars() tokens.
    size_t               max_piece_chars() const { return max_piece_chars_ > 0 ? max_piece_chars_ : 1; }

private:
    enum { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

    struct merge {
        int32_t rank, to;  // HF: priority (lower first) and the id the pair becomes
    };
    struct trie_node {
        std::map<unsigned char, size_t> next;
        int32_t                         id = -1;  // a special token ends here
    };
    static uint64_t pair_key(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }

    void   encode_segment(const std::vector<uint32_t> & cps, std::vector<int32_t> & out) const;
    void   byte_fallback(const std::string & text, std::vector<int32_t> & out) const;
    void   add_special(const std::string & piece, int32_t id);
    // Byte length of the longest special token at text[pos] (0: none), its id in `id`.
    size_t longest_special(const std::string & text, size_t pos, int32_t & id) const;

    std::vector<std::string>                      tokens_;
    std::vector<int32_t>                          types_;
    std::vector<float>                            scores_;      // SentencePiece mode
    std::unordered_map<uint64_t, merge>           merges_;      // Hugging Face mode, by pair_key
    bool                                          hf_mode_ = false;
    bool                                          add_space_prefix_ = true;
    std::unordered_map<std::string, int32_t>      ids_;
    std::vector<trie_node>                        trie_;      // HF: special tokens, cut out of raw text;
                                                              // SentencePiece: user-defined pieces
    size_t                                        max_piece_chars_ = 0;
    int32_t                                       byte_ids_[256];
    int32_t                                       unk_id_ = 0;
};

}  // namespace omni::vla
