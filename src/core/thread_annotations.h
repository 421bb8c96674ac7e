#pragma once
// Thread-safety annotations: they state which mutex guards a member and which locks a function
// expects, where the declaration is, and clang's -Wthread-safety checks every access against
// them at compile time (CMakeLists.txt turns its findings into errors under clang). g++, the
// product compiler, has no such analysis: there every macro expands to nothing, so an
// annotation never changes the generated code.
//
// The analysis is intraprocedural and follows only what it is told: a lambda body is a
// function of its own (it holds no lock unless it takes one), and ownership handed between
// threads by protocol is invisible to it. Where that is the case the code says so in a
// comment instead of silencing the check.
//
//   Mutex mu_;
//   int count_ GUARDED_BY(mu_);          // read or written only with mu_ held
//   Item* head_ PT_GUARDED_BY(mu_);      // the pointer is free, what it points at is guarded
//   void bump() REQUIRES(mu_);           // the caller holds mu_
//   void flush() EXCLUDES(mu_);          // the caller must not hold mu_ (it takes it)

#if defined(__clang__)
#define TS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define TS_THREAD_ANNOTATION(x)
#endif

// On a class: its objects are locks that functions can acquire, release and require.
#define CAPABILITY(name) TS_THREAD_ANNOTATION(capability(name))
// On a class: an RAII holder; its constructor acquires, its destructor releases.
#define SCOPED_CAPABILITY TS_THREAD_ANNOTATION(scoped_lockable)

// On a data member: every read and write needs the capability held.
#define GUARDED_BY(x) TS_THREAD_ANNOTATION(guarded_by(x))
// On a pointer member: every access through the pointer needs the capability held.
#define PT_GUARDED_BY(x) TS_THREAD_ANNOTATION(pt_guarded_by(x))

// On a function: the caller must hold the capabilities, and still holds them on return.
#define REQUIRES(...) TS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUSIVE_LOCKS_REQUIRED(...) REQUIRES(__VA_ARGS__)
// On a function: the caller must not hold the capabilities (the function takes them).
#define EXCLUDES(...) TS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define LOCKS_EXCLUDED(...) EXCLUDES(__VA_ARGS__)

// On a function: it acquires / releases the capabilities (none named: the object itself).
#define ACQUIRE(...) TS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) TS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
// On a function returning bool: TRY_ACQUIRE(true) acquired the object when it returns true.
#define TRY_ACQUIRE(...) TS_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))

// On a function: not checked at all. Only for a few lines the analysis cannot follow, with a
// comment that says why they are right.
#define NO_THREAD_SAFETY_ANALYSIS TS_THREAD_ANNOTATION(no_thread_safety_analysis)
