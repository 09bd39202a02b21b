//! The kernel command line's words (`/proc/cmdline`): split the way the kernel splits them
//! (double-quoted stretches keep their spaces) and read as `key=value` pairs. Shared by PID 1's
//! parameters (`init::cmdline`), module parameters (`init::modules`) and the boot-medium ids
//! (`devices::bootmedia`).

/// Splits the command line like the kernel does: words separated by whitespace; a double quote
/// starts/ends a quoted stretch in which spaces do not split (the quotes themselves are dropped).
pub fn split_kernel(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut have = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_q = !in_q;
                have = true;
            }
            c if c.is_whitespace() && !in_q => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// Every `key=value` (or bare `key`, value "") of the command line, in order.
pub fn parse_pairs(cmdline: &str) -> Vec<(String, String)> {
    split_kernel(cmdline)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (w, String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_split_keeps_quoted_values() {
        let c = "BOOT_IMAGE=/vmlinuz console=ttyS0,115200 lifeboat.run=\"clone serial=A serial=B --yes\" quiet\n";
        assert_eq!(
            split_kernel(c),
            [
                "BOOT_IMAGE=/vmlinuz",
                "console=ttyS0,115200",
                "lifeboat.run=clone serial=A serial=B --yes",
                "quiet"
            ]
        );
        // A quote in the middle of a word and a whole quoted word.
        assert_eq!(split_kernel("\"a b\" c=\"\" d"), ["a b", "c=", "d"]);
        assert_eq!(split_kernel("   "), Vec::<String>::new());
        // Unterminated quote: the rest is one word (as the kernel does).
        assert_eq!(split_kernel("x=\"a b"), ["x=a b"]);
    }
}
