/* Version and build provenance, filled in by the Makefile. */
#ifndef FL_VERSION_H
#define FL_VERSION_H

#ifndef FL_VERSION
#define FL_VERSION "0.0.0-unknown"
#endif
#ifndef FL_GIT_COMMIT
#define FL_GIT_COMMIT "unknown"
#endif
#ifndef FL_GIT_DIRTY
#define FL_GIT_DIRTY 0
#endif

#endif
