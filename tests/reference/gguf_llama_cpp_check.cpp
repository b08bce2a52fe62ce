// Loads a GGUF file with llama.cpp itself and prints what scripts/check_gguf_llama_cpp.sh
// compares with swift: the last position's logits for a prompt of token ids, a greedy
// continuation, and llama.cpp's tokenization of a text (no special tokens added).
//
// Usage: gguf_llama_cpp_check MODEL.gguf IDS(comma-separated) GREEDY_TOKENS TEXT
// Build: see scripts/check_gguf_llama_cpp.sh (links libllama and ggml, CPU only).

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf IDS GREEDY_TOKENS TEXT\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "llama.cpp could not load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 128;
    cp.n_batch = 128;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llama.cpp could not create a context\n");
        return 1;
    }
    std::vector<llama_token> ids;
    std::stringstream ss(argv[2]);
    for (std::string t; std::getline(ss, t, ',');) {
        ids.push_back(std::atoi(t.c_str()));
    }
    if (llama_decode(ctx, llama_batch_get_one(ids.data(), (int32_t) ids.size())) != 0) {
        fprintf(stderr, "llama_decode failed\n");
        return 1;
    }
    const float * logits = llama_get_logits_ith(ctx, -1);
    std::string out = "{\"n_vocab\": " + std::to_string(n_vocab) + ", \"last_logits\": [";
    for (int i = 0; i < n_vocab; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%s%.7g", i ? ", " : "", logits[i]);
        out += buf;
    }
    out += "], \"greedy\": [";
    const int n = std::atoi(argv[3]);
    for (int step = 0; step < n; step++) {
        const float * l = llama_get_logits_ith(ctx, -1);
        llama_token best = 0;
        for (int i = 1; i < n_vocab; i++) {
            if (l[i] > l[best]) best = i;
        }
        out += (step ? ", " : "") + std::to_string(best);
        if (llama_decode(ctx, llama_batch_get_one(&best, 1)) != 0) {
            fprintf(stderr, "llama_decode failed\n");
            return 1;
        }
    }
    out += "], \"tokens\": [";
    const std::string text = argv[4];
    std::vector<llama_token> toks(text.size() + 16);
    const int nt = llama_tokenize(vocab, text.c_str(), (int32_t) text.size(), toks.data(),
                                  (int32_t) toks.size(), false, false);
    for (int i = 0; i < nt; i++) {
        out += (i ? ", " : "") + std::to_string(toks[i]);
    }
    out += "]}";
    puts(out.c_str());
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
