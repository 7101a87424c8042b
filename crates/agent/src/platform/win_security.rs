//! Windows key and folder protection: DPAPI (machine scope) wraps the
//! secrets store's key, so a copied data folder cannot be decrypted on
//! another machine; the data folder's ACL admits SYSTEM, Administrators and
//! the service account only (not Users, which C:\ProgramData lets read).

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::{LocalFree, HLOCAL};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    SetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::Cryptography::{
    CryptProtectData, CryptUnprotectData, CRYPTPROTECT_LOCAL_MACHINE, CRYPTPROTECT_UI_FORBIDDEN,
    CRYPT_INTEGER_BLOB,
};
use windows_sys::Win32::Security::{
    GetSecurityDescriptorDacl, LookupAccountNameW, ACL, DACL_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, SID_NAME_USE,
};

/// What a DPAPI-wrapped key file starts with.
const MAGIC: &[u8] = b"PCK-DPAPI1";
/// Mixed into DPAPI so another program's machine-scope blob is not ours.
const ENTROPY: &[u8] = b"pos-connector secrets store key";

fn wide(s: impl AsRef<OsStr>) -> Vec<u16> {
    s.as_ref().encode_wide().chain(Some(0)).collect()
}

fn blob(bytes: &[u8]) -> CRYPT_INTEGER_BLOB {
    CRYPT_INTEGER_BLOB {
        cbData: bytes.len() as u32,
        pbData: bytes.as_ptr() as *mut u8,
    }
}

/// Copies DPAPI's output and frees it.
unsafe fn take(out: CRYPT_INTEGER_BLOB) -> Vec<u8> {
    let bytes = std::slice::from_raw_parts(out.pbData, out.cbData as usize).to_vec();
    LocalFree(out.pbData as HLOCAL);
    bytes
}

/// The key as stored: the magic, then DPAPI's machine-scope blob.
pub(crate) fn protect_key(key: &[u8]) -> io::Result<Vec<u8>> {
    let input = blob(key);
    let entropy = blob(ENTROPY);
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: null_mut(),
    };
    let ok = unsafe {
        CryptProtectData(
            &input,
            null(),
            &entropy,
            null(),
            null(),
            CRYPTPROTECT_LOCAL_MACHINE | CRYPTPROTECT_UI_FORBIDDEN,
            &mut out,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stored = MAGIC.to_vec();
    stored.extend(unsafe { take(out) });
    Ok(stored)
}

/// The key from its stored form, and whether it should be stored again
/// wrapped (a bare key written before the wrapping is returned as it is).
pub(crate) fn unprotect_key(stored: &[u8]) -> io::Result<(Vec<u8>, bool)> {
    let Some(wrapped) = stored.strip_prefix(MAGIC) else {
        return Ok((stored.to_vec(), true));
    };
    let input = blob(wrapped);
    let entropy = blob(ENTROPY);
    let mut out = CRYPT_INTEGER_BLOB {
        cbData: 0,
        pbData: null_mut(),
    };
    let ok = unsafe {
        CryptUnprotectData(
            &input,
            null_mut(),
            &entropy,
            null(),
            null(),
            CRYPTPROTECT_UI_FORBIDDEN,
            &mut out,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((unsafe { take(out) }, false))
}

/// The SID of a named account as a string (`S-1-5-...`).
fn account_sid(account: &str) -> io::Result<String> {
    let name = wide(account);
    let mut sid = vec![0u8; 256];
    let mut sid_len = sid.len() as u32;
    let mut domain = vec![0u16; 256];
    let mut domain_len = domain.len() as u32;
    let mut kind: SID_NAME_USE = 0;
    let ok = unsafe {
        LookupAccountNameW(
            null(),
            name.as_ptr(),
            sid.as_mut_ptr() as _,
            &mut sid_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut text = null_mut();
    if unsafe { ConvertSidToStringSidW(sid.as_mut_ptr() as _, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let s = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text as HLOCAL);
        s
    };
    Ok(s)
}

/// The folder's ACL in SDDL: protected (nothing inherited from
/// C:\ProgramData), full control for SYSTEM, Administrators and `account`,
/// inherited by files and subfolders.
pub(crate) fn folder_sddl(account_sid: Option<&str>) -> String {
    let mut sddl = String::from("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)");
    if let Some(sid) = account_sid {
        sddl.push_str(&format!("(A;OICI;FA;;;{sid})"));
    }
    sddl
}

/// Sets the folder's ACL (and re-applies it to what is already inside).
/// `account`: the service's named account; LocalSystem is SYSTEM.
pub(crate) fn restrict_folder(dir: &Path, account: Option<&str>) -> io::Result<()> {
    let sid = match account {
        Some(a) => Some(account_sid(a)?),
        None => None,
    };
    let sddl = wide(folder_sddl(sid.as_deref()));
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    if unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            null_mut(),
        )
    } == 0
    {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let mut present = 0;
        let mut defaulted = 0;
        let mut dacl: *mut ACL = null_mut();
        if unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut path = wide(dir.as_os_str());
        let code = unsafe {
            SetNamedSecurityInfoW(
                path.as_mut_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                null_mut(),
                null_mut(),
                dacl,
                null(),
            )
        };
        if code != 0 {
            return Err(io::Error::from_raw_os_error(code as i32));
        }
        Ok(())
    })();
    unsafe { LocalFree(sd as HLOCAL) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_dpapi_and_a_damaged_blob_is_refused() {
        let key = [7u8; 32];
        let stored = protect_key(&key).unwrap();
        assert!(stored.starts_with(MAGIC));
        assert!(
            !stored.windows(32).any(|w| w == key),
            "the key is not stored bare"
        );
        let (back, rewrap) = unprotect_key(&stored).unwrap();
        assert_eq!(back, key);
        assert!(!rewrap);
        let mut damaged = stored.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(unprotect_key(&damaged).is_err());
        // A bare key from before the wrapping is read as it is.
        let (bare, rewrap) = unprotect_key(&key).unwrap();
        assert_eq!(bare, key);
        assert!(rewrap);
    }

    #[test]
    fn the_data_folder_admits_system_administrators_and_the_account_only() {
        assert_eq!(folder_sddl(None), "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)");
        assert!(folder_sddl(Some("S-1-5-19")).ends_with("(A;OICI;FA;;;S-1-5-19)"));
        // Under Wine the call succeeds but the ACL read back is synthesised
        // from Unix modes: only success is asserted here.
        let dir = tempfile::tempdir().unwrap();
        restrict_folder(dir.path(), None).unwrap();
        restrict_folder(dir.path(), Some("SYSTEM")).unwrap();
        std::fs::write(dir.path().join("x"), b"still usable by us").unwrap();
    }
}
