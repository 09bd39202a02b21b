//! Whether the module parameters given on the kernel command line
//! (`nvme_core.default_ps_max_latency_us=0`, `usb-storage.quirks=…`) took effect: after the
//! drivers have loaded, each is read back from `/sys/module/MODULE/parameters/PARAM` and the
//! boot says what it found, so a misspelt name or a module that never loaded is seen on the
//! console instead of being silently ignored.
use std::path::Path;

/// What reading one parameter back found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// sysfs reads the value given (a boolean as the kernel spells it: `1` → `Y`).
    InEffect,
    /// sysfs reads something else (the module may normalise the value, or refuse it).
    Reads(String),
    /// The module is loaded but does not show this parameter in sysfs (not readable, or no
    /// such parameter: the kernel log says "unknown parameter" then).
    NotShown,
    /// The module is not loaded: no hardware needed it, or its name is misspelt.
    NotLoaded,
}

/// One `module.param=value` of the command line and what sysfs says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The module name with `_` (as `/sys/module` spells it).
    pub module: String,
    /// The parameter as given.
    pub param: String,
    pub value: String,
    pub state: State,
}

/// The kernel's spelling of a boolean parameter's value, if `v` is one.
fn as_bool(v: &str) -> Option<&'static str> {
    match v {
        "1" | "y" | "Y" | "on" | "true" => Some("Y"),
        "0" | "n" | "N" | "off" | "false" => Some("N"),
        _ => None,
    }
}

/// Every module parameter of `cmdline` (the keys `init::modules` hands to the modules it
/// loads) checked against `sys_module` (`/sys/module`), in command-line order.
pub fn check(cmdline: &str, sys_module: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    for (k, v) in crate::kcmdline::parse_pairs(cmdline) {
        let Some((m, p)) = super::modules::module_param_key(&k) else {
            continue;
        };
        let module = crate::modindex::canonical(m);
        let dir = sys_module.join(&module);
        let state = if !dir.is_dir() {
            State::NotLoaded
        } else {
            // The kernel treats `-` and `_` alike in parameter names; sysfs has the declared
            // name, which uses `_`.
            let file = dir.join("parameters").join(p.replace('-', "_"));
            match std::fs::read_to_string(&file) {
                Err(_) => State::NotShown,
                Ok(s) => {
                    let s = s.trim_end_matches('\n');
                    if s == v || (as_bool(&v).is_some() && as_bool(&v) == as_bool(s)) {
                        State::InEffect
                    } else {
                        State::Reads(s.to_string())
                    }
                }
            }
        };
        out.push(Check {
            module,
            param: p.to_string(),
            value: v,
            state,
        });
    }
    out
}

/// One console line about a check ("module parameter nvme_core.default_ps_max_latency_us=0 in
/// effect").
pub fn describe(c: &Check) -> String {
    let what = format!("module parameter {}.{}={}", c.module, c.param, c.value);
    match &c.state {
        State::InEffect => format!("{what} in effect"),
        State::Reads(s) => format!(
            "{what}: /sys/module/{}/parameters/{} reads {s:?} (the module changed or refused \
             the value: see the kernel log)",
            c.module, c.param
        ),
        State::NotShown => format!(
            "{what}: {} is loaded but does not show this parameter (not readable, or no such \
             parameter: the kernel log then says \"unknown parameter\")",
            c.module
        ),
        State::NotLoaded => format!(
            "{what} not in effect: module {} is not loaded (no hardware needed it, or the \
             module name is misspelt)",
            c.module
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn param(sys: &Path, m: &str, p: &str, v: &str) {
        let d = sys.join(m).join("parameters");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(p), format!("{v}\n")).unwrap();
    }

    #[test]
    fn parameters_read_back() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        param(sys, "nvme_core", "default_ps_max_latency_us", "0");
        param(sys, "usb_storage", "quirks", "152d:0578:u");
        param(sys, "usb_storage", "delay_use", "5");
        param(sys, "nvme", "use_cmb_sqes", "N");
        // libata is loaded; its `force` is not readable in sysfs.
        fs::create_dir_all(sys.join("libata/parameters")).unwrap();
        let c = check(
            "console=ttyS0 nvme_core.default_ps_max_latency_us=0 usb-storage.quirks=152d:0578:u \
             usb-storage.delay-use=3 nvme.use_cmb_sqes=0 libata.force=1:noncq \
             mpt3sas.max_queue_depth=64 lifeboat.run=\"list --json\" quiet",
            sys,
        );
        let got: Vec<(&str, &str, &State)> = c
            .iter()
            .map(|c| (c.module.as_str(), c.param.as_str(), &c.state))
            .collect();
        assert_eq!(
            got,
            [
                ("nvme_core", "default_ps_max_latency_us", &State::InEffect),
                ("usb_storage", "quirks", &State::InEffect),
                ("usb_storage", "delay-use", &State::Reads("5".into())),
                ("nvme", "use_cmb_sqes", &State::InEffect),
                ("libata", "force", &State::NotShown),
                ("mpt3sas", "max_queue_depth", &State::NotLoaded),
            ]
        );
        assert_eq!(
            describe(&c[0]),
            "module parameter nvme_core.default_ps_max_latency_us=0 in effect"
        );
        assert!(
            describe(&c[2]).contains("reads \"5\""),
            "{}",
            describe(&c[2])
        );
        assert!(
            describe(&c[5]).contains("not loaded"),
            "{}",
            describe(&c[5])
        );
        // No module parameter at all: nothing to say.
        assert!(check("console=ttyS0 quiet root=/dev/sda1", sys).is_empty());
    }
}
