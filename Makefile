# fifolab build. `make test` sets up, builds and runs every suite; `make asan` runs the
# same suites under AddressSanitizer + UndefinedBehaviorSanitizer; `make run` runs the
# default command. Objects go to build/ (build/asan/ for the sanitizer build).

VERSION := 0.1.0
CC ?= cc
BUILD ?= build
DEPS_STAMP := $(BUILD)/.deps-ok

# Strict warnings on project code (Lua's own list, roughly).
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpedantic \
        -Wpointer-arith -Wcast-align -Wwrite-strings -Wundef -Wvla -Werror
# Set on the command line (make OPT=...), never taken from the environment.
OPT = -O2 -g
PKGS := openblas lapacke fftw3 fftw3f cmocka libcjson libzip lua5.4 hdf5
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
GIT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
GIT_DIRTY := $(shell test -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" && echo 1 || echo 0)
CFLAGS_ALL = -std=c11 -I. -D_POSIX_C_SOURCE=200809L $(OPT) $(WARN) $(PKG_CFLAGS) $(SAN) \
             -DFL_VERSION='"$(VERSION)"' \
             $(CUDA_DEFS) $(MPI_DEFS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lfftw3f_threads -lfftw3_threads -lpthread -lm $(CUDA_LIBS) $(MPI_LIBS) $(LDLIBS)

# MPI (sweeps spread over ranks): built with Debian's OpenMPI when its pkg-config file is
# there, unless NO_MPI=1; without it `fifolab run` is serial (and --index still works).
# Recursive (=) so the check runs after the set-up step may have installed it.
MPI_PC = $(if $(filter 1,$(NO_MPI)),,$(shell pkg-config --exists ompi-c 2>/dev/null && echo ompi-c))
MPI_DEFS = $(if $(MPI_PC),-DFL_HAVE_MPI=1 $(shell pkg-config --cflags ompi-c))
MPI_LIBS = $(if $(MPI_PC),$(shell pkg-config --libs ompi-c))

# CUDA: built when nvcc is found (on PATH or in /usr/local/cuda), unless NO_CUDA=1.
ifneq ($(NO_CUDA),1)
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
endif
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
ifneq ($(strip $(NVCC)),)
# nvcc may be a wrapper script (e.g. /usr/local/bin/nvcc): ask it for its toolkit root,
# and build the CUDA backend only when cudart and cuBLAS are really there.
CUDA_HOME := $(shell $(NVCC) --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^\#\$$ TOP=//p' | head -n1)
CUDA_LIBDIR := $(firstword $(foreach d,$(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib \
                 $(CUDA_HOME)/targets/sbsa-linux/lib /usr/lib/x86_64-linux-gnu,\
                 $(if $(wildcard $(d)/libcudart.so $(d)/libcublas.so),$(if $(word 2,$(wildcard $(d)/libcudart.so $(d)/libcublas.so)),$(realpath $(d))))))
ifeq ($(CUDA_LIBDIR),)
$(info note: $(NVCC) found but libcudart.so/libcublas.so not; building without the CUDA backend)
NVCC :=
endif
endif
ifneq ($(strip $(NVCC)),)
CUDA_DEFS := -DFL_HAVE_CUDA=1
CUDA_LIBS := -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcublas -lcudart -lstdc++
CUDA_SRC := $(wildcard ops/cuda/*.cu)
endif

LIB_SRC := $(wildcard core/*.c ops/*.c ops/cpu/*.c ops/cuda/*.c models/*.c schedulers/*.c eval/*.c data/*.c)
LIB_SRC := $(filter-out core/main.c,$(LIB_SRC))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CUDA_SRC:%.cu=$(BUILD)/%.cu.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
LIB := $(BUILD)/libfifolab.a

.PHONY: all setup test asan test-asan run bench clean help fuzz FORCE
.SECONDARY:

# Quiet by default; V=1 shows the full commands.
Q := $(if $(filter 1,$(V)),,@)

all: fifolab $(TEST_BIN)

help:
	@echo "make            build libfifolab.a, ./fifolab and the test suites"
	@echo "make setup      install missing Debian packages (apt-get; needs root)"
	@echo "make test       set up, build and run every test suite"
	@echo "make asan       the same suites under ASan + UBSan (build/asan)"
	@echo "make run        set up, build and run the default experiment (runs/default: run.h5, video.mp4)"
	@echo "make bench      benchmarks (ratios against the raw libraries, one run)"
	@echo "make fuzz       fuzz the checkpoint parsers (clang libFuzzer + ASan/UBSan; FUZZ_SECONDS=20 per target)"
	@echo "make clean      remove build outputs"
	@echo "options: NO_CUDA=1, NO_MPI=1, CUDA_ARCH='...', OPT='-O0 -g'"

# Dependencies are checked at every make (a fraction of a second when all are there), so a
# package removed since the last build gets setup's message, not a compile error. The stamp
# is touched only when the script changed, so objects are not rebuilt for nothing.
$(DEPS_STAMP): FORCE
	@FL_SETUP_QUIET=1 sh scripts/setup.sh
	@mkdir -p $(@D) && if [ ! -f $@ ] || [ scripts/setup.sh -nt $@ ]; then touch $@; fi

setup:
	@sh scripts/setup.sh

# Objects depend on the flags they were built with: changing NO_CUDA, OPT, SAN, ... rebuilds.
FLAGS_FILE := $(BUILD)/.flags
FLAGS_NOW = $(CFLAGS_ALL) | $(LDLIBS_ALL) | $(NVCC) $(CUDA_ARCH)
$(FLAGS_FILE): FORCE $(DEPS_STAMP)
	@mkdir -p $(@D)
	@if [ "$$(cat $@ 2>/dev/null)" != '$(FLAGS_NOW)' ]; then echo '$(FLAGS_NOW)' > $@; fi
FORCE:

$(BUILD)/%.o: %.c $(DEPS_STAMP) $(FLAGS_FILE)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu $(DEPS_STAMP) $(FLAGS_FILE)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) -std=c++17 -O2 $(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-Wshadow,-Wmissing-declarations,-Wpointer-arith,-Wcast-align,-fPIC \
	    -Werror all-warnings -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	@$(if $(Q),echo "  AR      $@")
	$(Q)ar rcs $@ $^

# The git commit goes only into the CLI's object, so a new commit relinks one file rather
# than rebuilding everything.
VERSION_FILE := $(BUILD)/.git-version
$(VERSION_FILE): FORCE
	@mkdir -p $(@D)
	@v='$(GIT_COMMIT) $(GIT_DIRTY)'; if [ "$$(cat $@ 2>/dev/null)" != "$$v" ]; then echo "$$v" > $@; fi
$(BUILD)/core/main.o: $(VERSION_FILE)
$(BUILD)/core/main.o: private CFLAGS_ALL += -DFL_GIT_COMMIT='"$(GIT_COMMIT)"' -DFL_GIT_DIRTY=$(GIT_DIRTY)

$(BUILD)/fifolab: $(BUILD)/core/main.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) $^ -o $@ $(LDLIBS_ALL)

fifolab: $(BUILD)/fifolab
	@if [ "$(BUILD)" = build ]; then cp $< $@; fi

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) $^ -o $@ $(LDLIBS_ALL)

# test_oom fails the library's allocations one by one: every malloc-family call of the
# objects linked statically (libfifolab.a, the test) goes through its wrappers.
OOM_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup,--wrap=strndup \
            -Wl,--wrap=aligned_alloc,--wrap=posix_memalign,--wrap=realpath
$(BUILD)/tests/test_oom: $(BUILD)/tests/test_oom.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) $^ -o $@ $(OOM_WRAP) $(LDLIBS_ALL)

# Every suite runs even when an earlier one fails; the last line totals them all.
# The shell suites are every tests/*.sh but the library they share.
SHELL_SUITES := $(filter-out tests/lib.sh,$(wildcard tests/*.sh))
RUN_SUITES = FL_CLI_BIN=$(BUILD)/fifolab sh scripts/run-tests.sh $(TEST_BIN) $(SHELL_SUITES)

test: all
	@$(RUN_SUITES)

# The sanitizer build lives in build/asan; LeakSanitizer is on.
asan:
	@$(MAKE) --no-print-directory BUILD=build/asan OPT='-O1 -g -fno-omit-frame-pointer' \
	    SAN='-fsanitize=address,undefined -fno-sanitize-recover=all' test-asan

test-asan: $(BUILD)/fifolab $(TEST_BIN)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:protect_shadow_gap=0 \
	 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 $(RUN_SUITES)

# Benchmarks report ratios against the raw library in the same run (machines are noisy).
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) $^ -o $@ $(LDLIBS_ALL)

bench: $(BENCH_BIN)
	@for b in $(BENCH_BIN); do $$b || exit 1; done

# The default experiment: experiments/default.lua (the empirical-clip model on the
# procedural dataset, made into runs/data/clips.h5 when absent; FIFO with lookahead, 4
# partitions; three prompts, 288 frames) into runs/default/run.h5 and video.mp4, then its
# summary. A complete run is skipped; RUN_ARGS='--force' reruns it.
RUN_ARGS ?=
run: fifolab
	$(BUILD)/fifolab run experiments/default.lua $(RUN_ARGS)
	$(BUILD)/fifolab info --no-config runs/default

# Checkpoint-parser fuzzing (clang + libFuzzer, installed by fuzz/run.sh only when missing).
FUZZ_SECONDS ?= 20
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh fuzz/run.sh

# Results in runs/ are kept (make run's experiment and dataset): remove them by hand.
clean:
	rm -rf build fifolab

-include $(LIB_OBJ:.o=.d) $(BUILD)/core/main.d $(TEST_BIN:=.d) $(BENCH_BIN:=.d)
