// C++ allocation churn for the LD_PRELOAD suite: operator new/delete in all
// flavours (array, aligned, nothrow, sized), standard containers and
// shared_ptr handed between std::thread workers. stdout is deterministic.
//
// usage: cxx [threads] [rounds]
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

[[noreturn]] static void fail(const char *what)
{
    std::fprintf(stderr, "cxx: FAIL: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

static std::size_t opaque(std::size_t x)
{
    __asm__ volatile("" : "+r"(x));
    return x;
}

static void *volatile sink;

static std::uint64_t mix(std::uint64_t h, std::uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 33);
}

static std::uint64_t fnv(const std::string &s)
{
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s)
        h = (h ^ c) * 1099511628211ull;
    return h;
}

struct Rng {
    std::uint64_t s;
    std::uint64_t next()
    {
        std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    std::uint64_t below(std::uint64_t n) { return next() % n; }
};

struct alignas(64) Line {
    std::uint64_t v[8];
};
struct alignas(4096) Page {
    unsigned char b[4096];
};
struct alignas(256) Odd {
    char c[300];
};

static std::atomic<long> live_objects{0};

struct Tracked {
    std::uint64_t value;
    std::string name;
    explicit Tracked(std::uint64_t v) : value(v), name("obj-" + std::to_string(v)) { live_objects++; }
    ~Tracked() { live_objects--; }
};

template <class T> static void check_align(const T *p, const char *what)
{
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
        fail(what);
}

// Single-threaded checks of the operator new family.
static std::uint64_t operators()
{
    std::uint64_t h = 0;
    for (int round = 0; round < 200; round++) {
        int *i = new int(round);
        h = mix(h, static_cast<std::uint64_t>(*i));
        delete i;

        std::size_t n = opaque(static_cast<std::size_t>(round) * 37 + 1);
        char *a = new char[n];
        for (std::size_t k = 0; k < n; k++)
            a[k] = static_cast<char>(k + round);
        h = mix(h, static_cast<unsigned char>(a[n - 1]));
        delete[] a;

        Line *l = new Line{};
        check_align(l, "new Line not 64-aligned");
        l->v[7] = static_cast<std::uint64_t>(round);
        h = mix(h, l->v[7]);
        delete l;

        Line *ls = new Line[opaque(5 + static_cast<std::size_t>(round % 7))];
        check_align(ls, "new Line[] not 64-aligned");
        delete[] ls;

        Page *pg = new Page;
        check_align(pg, "new Page not 4096-aligned");
        pg->b[4095] = 1;
        delete pg;

        Page *pgs = new Page[opaque(3)];
        check_align(pgs, "new Page[] not 4096-aligned");
        pgs[2].b[0] = 2;
        delete[] pgs;

        Odd *o = new Odd[opaque(4)];
        check_align(o, "new Odd[] not 256-aligned");
        delete[] o;

        int *nt = new (std::nothrow) int[opaque(100)];
        if (nt == nullptr)
            fail("nothrow new[] of 400 bytes returned nullptr");
        delete[] nt;

        Page *ntp = new (std::nothrow) Page;
        if (ntp == nullptr)
            fail("nothrow aligned new returned nullptr");
        check_align(ntp, "nothrow new Page not 4096-aligned");
        delete ntp;

        // Explicit operator calls: sized and aligned deallocation.
        void *raw = ::operator new(opaque(1000));
        ::operator delete(raw, 1000);
        void *al = ::operator new(opaque(1000), std::align_val_t(128));
        if (reinterpret_cast<std::uintptr_t>(al) % 128 != 0)
            fail("operator new(1000, align 128) misaligned");
        ::operator delete(al, 1000, std::align_val_t(128));
        void *al2 = ::operator new[](opaque(5000), std::align_val_t(4096), std::nothrow);
        if (al2 == nullptr || reinterpret_cast<std::uintptr_t>(al2) % 4096 != 0)
            fail("operator new[](5000, align 4096, nothrow)");
        ::operator delete[](al2, std::align_val_t(4096));
    }

    // Impossible sizes: nothrow gives nullptr, throwing new gives bad_alloc.
    char *huge = new (std::nothrow) char[opaque(SIZE_MAX / 2)];
    if (huge != nullptr)
        fail("nothrow new of SIZE_MAX/2 bytes did not return nullptr");
    void *huge_al = ::operator new(opaque(SIZE_MAX / 2), std::align_val_t(64), std::nothrow);
    if (huge_al != nullptr)
        fail("nothrow aligned new of SIZE_MAX/2 bytes did not return nullptr");
    bool caught = false;
    try {
        sink = ::operator new(opaque(SIZE_MAX / 2));
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    if (!caught)
        fail("operator new(SIZE_MAX/2) did not throw std::bad_alloc");
    caught = false;
    try {
        sink = ::operator new[](opaque(SIZE_MAX / 2), std::align_val_t(256));
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    if (!caught)
        fail("aligned operator new[](SIZE_MAX/2) did not throw std::bad_alloc");
    return h;
}

// Work items passed between threads: the last reference may die anywhere.
struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<std::vector<std::string>>> q;
    int producers_left;
};

static std::uint64_t worker(int id, int rounds, Shared &sh)
{
    Rng rng{0x5EEDull * static_cast<std::uint64_t>(id + 1)};
    std::uint64_t h = 0;
    std::map<std::string, std::uint64_t> ordered;
    std::unordered_map<std::uint64_t, std::string> hashed;
    std::vector<std::unique_ptr<Tracked>> objs;
    std::vector<std::shared_ptr<Tracked>> shared_objs;

    for (int r = 0; r < rounds; r++) {
        // strings of varied length, some long enough to leave SSO
        std::string s;
        std::size_t len = rng.below(10) == 0 ? 200 + rng.below(5000) : rng.below(40);
        for (std::size_t k = 0; k < len; k++)
            s.push_back(static_cast<char>('a' + rng.below(26)));
        ordered[s] += static_cast<std::uint64_t>(r);
        hashed[rng.below(4096)] = s + std::to_string(r);
        if (ordered.size() > 2000)
            ordered.erase(ordered.begin());
        if (rng.below(3) == 0)
            hashed.erase(rng.below(4096));

        // vectors growing by push_back, then shrinking
        std::vector<std::uint64_t> v;
        std::size_t vn = rng.below(2000);
        for (std::size_t k = 0; k < vn; k++)
            v.push_back(k * 3);
        v.resize(vn / 2);
        v.shrink_to_fit();
        h = mix(h, v.size());

        objs.emplace_back(new Tracked(rng.next() % 1000000));
        if (objs.size() > 300)
            objs.erase(objs.begin(), objs.begin() + 100);
        shared_objs.push_back(std::make_shared<Tracked>(static_cast<std::uint64_t>(r)));
        if (shared_objs.size() > 50)
            shared_objs.erase(shared_objs.begin());

        // hand a batch of strings to other threads every few rounds
        if (r % 8 == 0) {
            auto batch = std::make_shared<std::vector<std::string>>();
            std::size_t bn = 1 + rng.below(64);
            for (std::size_t k = 0; k < bn; k++)
                batch->push_back(std::string(rng.below(300), static_cast<char>('A' + k % 26)));
            std::lock_guard<std::mutex> g(sh.mu);
            sh.q.push_back(std::move(batch));
            sh.cv.notify_one();
        }
        // and drain what others produced (order-independent contribution)
        std::shared_ptr<std::vector<std::string>> got;
        {
            std::lock_guard<std::mutex> g(sh.mu);
            if (!sh.q.empty()) {
                got = std::move(sh.q.front());
                sh.q.pop_front();
            }
        }
        got.reset(); // frees memory allocated by another thread
    }
    for (const auto &kv : ordered)
        h = mix(h, fnv(kv.first) ^ kv.second);
    std::uint64_t uh = 0; // unordered: combine commutatively
    for (const auto &kv : hashed)
        uh += mix(kv.first, fnv(kv.second));
    h = mix(h, uh);
    for (const auto &o : objs)
        h = mix(h, fnv(o->name));
    {
        std::lock_guard<std::mutex> g(sh.mu);
        sh.producers_left--;
    }
    return h;
}

int main(int argc, char **argv)
{
    int nthreads = argc > 1 ? std::atoi(argv[1]) : 4;
    int rounds = argc > 2 ? std::atoi(argv[2]) : 50000;

    std::uint64_t h = operators();
    std::printf("operators: OK checksum=%016llx\n", static_cast<unsigned long long>(h));

    Shared sh;
    sh.producers_left = nthreads;
    std::vector<std::uint64_t> results(static_cast<std::size_t>(nthreads));
    std::vector<std::thread> ts;
    for (int t = 0; t < nthreads; t++)
        ts.emplace_back([t, rounds, &sh, &results] { results[static_cast<std::size_t>(t)] = worker(t, rounds, sh); });
    for (auto &t : ts)
        t.join();
    sh.q.clear(); // how many batches are left depends on scheduling: not printed
    ts.clear();

    // thread churn with containers
    std::uint64_t churn = 0;
    for (int wave = 0; wave < 50; wave++) {
        std::vector<std::thread> w;
        std::vector<std::uint64_t> out(static_cast<std::size_t>(nthreads));
        for (int t = 0; t < nthreads; t++)
            w.emplace_back([t, wave, &out] {
                std::vector<std::string> v;
                for (int k = 0; k < 200; k++)
                    v.push_back(std::to_string(wave * 1000 + t * 200 + k));
                std::map<std::string, int> m;
                for (auto &s : v)
                    m[s]++;
                out[static_cast<std::size_t>(t)] = m.size() + fnv(v.back());
            });
        for (auto &t : w)
            t.join();
        for (auto x : out)
            churn = mix(churn, x);
    }

    if (live_objects.load() != 0)
        std::fprintf(stderr, "cxx: note: %ld Tracked objects still live\n", live_objects.load());
    std::uint64_t total = 0;
    for (auto r : results)
        total = mix(total, r);
    std::printf("threads: %d rounds=%d checksum=%016llx\n", nthreads, rounds,
                static_cast<unsigned long long>(total));
    std::printf("churn: checksum=%016llx\n", static_cast<unsigned long long>(churn));
    std::printf("cxx: OK\n");
    return 0;
}
