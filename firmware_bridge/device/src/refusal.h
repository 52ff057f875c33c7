// refusal.h -- a request's failure as the ERROR reply it becomes (code, arg, text).
#ifndef EA_REFUSAL_H
#define EA_REFUSAL_H

#include <stdint.h>

namespace ea {

enum ErrorCode : uint16_t {
  kUnknownMessage = 1, kMalformed = 2, kUnsupportedVersion = 3, kNotReady = 4, kBusy = 5,
  kUploadNotStarted = 6, kUploadIncomplete = 7, kCrcMismatch = 8, kTooLarge = 9,
  kNoCredit = 10, kExecutionFailed = 11, kBadArgument = 12, kNoAdapter = 13, kInternal = 14,
  kDoesNotFit = 15, kInvalidProgram = 16, kNoSession = 17, kWrongRole = 18, kIdReused = 19,
};

struct Refusal {
  uint16_t code;
  uint32_t arg;
  char text[129];  // ERROR's text is at most 128 bytes
};

// Fill `r` and return false, so a handler can `return refuse(r, ...)`.
bool refuse(Refusal *r, uint16_t code, uint32_t arg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

}  // namespace ea

#endif  // EA_REFUSAL_H
