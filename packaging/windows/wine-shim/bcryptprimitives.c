/* For Wine runs only (CI, scripts/check-windows.sh), never shipped:
 * Debian's Wine 8 has no bcryptprimitives.dll, whose ProcessPrng Rust's
 * standard library (1.78+) imports on Windows, so every Rust exe would
 * die before main. This DLL forwards ProcessPrng to advapi32's
 * SystemFunction036 (RtlGenRandom), which Wine has.
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
