//! Named choices: enums whose variants each have one lowercase name, written in files, given on the
//! command line and shown in messages. [`choices!`](crate::choices) declares one: the name, the
//! parser, the serde form and clap's possible values (with each variant's doc line as its help) all
//! come from the same table, so they cannot disagree. Clap's half is generated only where the crate
//! using the macro has its `clap` feature on (the command line turns it on), so that library crates
//! build without clap.

/// A name that is none of the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{got}': use {choices}")]
pub struct UnknownName {
    /// What was being named (`preprocessing`, `device`, …).
    pub what: &'static str,
    pub got: String,
    /// The valid names, as `a, b or c`.
    pub choices: String,
}

/// `a`, `a or b`, `a, b or c`.
pub fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Declares an enum of named choices: `choices! { /// doc  pub enum Device("device") { /// doc
/// Cpu = "cpu", Cuda = "cuda" | "gpu" } }`. Generates the enum (Serialize/Deserialize and
/// `clap::ValueEnum` under those names, aliases after `|`), `ALL`, `name()`, `Display` and a
/// case-insensitive `FromStr` whose error ([`UnknownName`]) lists the names. The crate using it
/// must depend on `serde` and declare a feature `clap = ["dep:clap"]` (clap optional): `ValueEnum`
/// is derived only with that feature on.
#[macro_export]
macro_rules! choices {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $text $(, alias = $alias)*)]
                #[cfg_attr(feature = "clap", value(name = $text $(, alias = $alias)*))]
                $variant,
            )+
        }

        impl $name {
            /// Every choice, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name written in files and given on the command line.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::names::UnknownName;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                let t = s.trim();
                $(
                    if t.eq_ignore_ascii_case($text) $(|| t.eq_ignore_ascii_case($alias))* {
                        return Ok($name::$variant);
                    }
                )+
                Err($crate::names::UnknownName {
                    what: $what,
                    got: s.to_string(),
                    choices: $crate::names::list(&[$($text),+]),
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::choices! {
        /// A test enum.
        pub enum Colour("colour") {
            /// Red.
            Red = "red",
            /// Dark.
            Black = "black" | "dark",
        }
    }

    #[test]
    fn names_aliases_and_serde_agree() {
        for c in Colour::ALL {
            assert_eq!(c.name().parse::<Colour>(), Ok(*c));
            assert_eq!(
                serde_json::to_string(c).unwrap(),
                format!("\"{}\"", c.name())
            );
            #[cfg(feature = "clap")]
            assert_eq!(
                clap::ValueEnum::to_possible_value(c).unwrap().get_name(),
                c.name()
            );
        }
        assert_eq!("DARK".parse::<Colour>(), Ok(Colour::Black));
        assert_eq!(
            serde_json::from_str::<Colour>("\"dark\"").unwrap(),
            Colour::Black
        );
        let e = "blue".parse::<Colour>().unwrap_err().to_string();
        assert_eq!(e, "unknown colour 'blue': use red or black");
    }
}
