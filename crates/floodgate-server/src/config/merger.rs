//! Reading files into one config: each file's domain and policies, duplicates across files reported.

use super::*;

pub(super) fn whole_file(file: &str, message: String) -> ConfigIssue {
    ConfigIssue { file: file.into(), pos: Pos::default(), field: String::new(), message }
}

#[derive(Default)]
pub(super) struct Merger {
    pub(super) config: Config,
    pub(super) issues: Vec<ConfigIssue>,
    pub(super) warnings: Vec<ConfigIssue>,
    pub(super) merge_domains: bool,
}

impl Merger {
    pub(super) fn add_file(&mut self, file: Arc<str>, src: &str) {
        self.config.sources.push(file.clone());
        let mut reader = Reader { file: file.clone(), issues: Vec::new(), warnings: Vec::new() };
        let parsed = match yaml::parse(src) {
            Ok(Some(root)) => reader.file_root(&root),
            Ok(None) => {
                reader.issues.push(whole_file(&file, "the file is empty".into()));
                None
            }
            Err(e) => {
                reader.issues.push(ConfigIssue {
                    file: file.clone(),
                    pos: e.pos,
                    field: String::new(),
                    message: e.message,
                });
                None
            }
        };
        self.issues.append(&mut reader.issues);
        self.warnings.append(&mut reader.warnings);
        let Some((domain, policies)) = parsed else { return };
        if let Some((domain, pos)) = domain {
            if let (true, Some(prev)) = (self.merge_domains, self.config.domains.get_mut(&domain.name)) {
                prev.value_to_metric |= domain.value_to_metric;
                for rule in prev.root.absorb(domain.root) {
                    let message = format!(
                        "duplicate rule: {} is already defined by an earlier file of domain {:?} (domains are merged)",
                        rule.describe(),
                        &*domain.name
                    );
                    self.issues.push(ConfigIssue {
                        file: file.clone(),
                        pos: rule.pos,
                        field: "descriptors".into(),
                        message,
                    });
                }
            } else if let Some(prev) = self.config.domains.get(&domain.name) {
                let message = format!("domain {:?} is already defined in {}", &*domain.name, prev.file);
                self.issues.push(ConfigIssue { file, pos, field: "domain".into(), message });
            } else {
                self.config.domains.insert(domain.name.clone(), domain);
            }
        }
        for (name, p) in policies {
            if let Some(prev) = self.config.policies.get(&name) {
                let message = format!("policy {name:?} is already defined in {}:{}", prev.file, prev.pos.line);
                self.issues.push(ConfigIssue {
                    file: p.file.clone(),
                    pos: p.pos,
                    field: format!("policies.{name}"),
                    message,
                });
            } else {
                self.config.policies.insert(name, p);
            }
        }
    }

    pub(super) fn finish(mut self) -> Result<Config, ConfigError> {
        if !self.issues.is_empty() {
            return Err(ConfigError::Invalid(self.issues));
        }
        self.config.warnings = self.warnings;
        Ok(self.config)
    }
}
