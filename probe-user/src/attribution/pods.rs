//! The pods of holders and callers: the container ids their cgroups gave, named by the pod
//! directory (one lookup for everything a pass or a `who` needs).

use std::collections::HashMap;

use crate::{
    container::{Container, PodNames},
    kubernetes::PodDirectory,
    model::Attribution,
};

/// Every container (with the pid that runs in it) in `containers`, to name at once.
#[derive(Default)]
pub struct Unnamed {
    wanted: Vec<(String, u32)>,
}

impl Unnamed {
    /// Adds `container` (run by `pid`) if it has an id and no names yet.
    pub fn add(&mut self, container: Option<&Container>, pid: u32) {
        let Some(c) = container else { return };
        if let (Some(id), None) = (&c.id, &c.k8s) {
            if !self.wanted.iter().any(|(w, _)| w == id) {
                self.wanted.push((id.clone(), pid));
            }
        }
    }

    /// Adds the holders' containers of `a`.
    pub fn add_holders(&mut self, a: &Attribution) {
        for p in a.holders.iter().filter_map(|h| h.process.as_ref()) {
            self.add(p.container.as_ref(), p.pid);
        }
    }

    /// Their names, from `pods` (which asks the runtime for those it does not know).
    pub fn names(&self, pods: &PodDirectory) -> Names {
        Names(pods.names(&self.wanted))
    }

    /// Their names as far as `pods` knows them already, without asking the runtime.
    pub fn known_names(&self, pods: &PodDirectory) -> Names {
        Names(pods.lookup(&self.wanted))
    }
}

/// Names found for container ids.
pub struct Names(HashMap<String, PodNames>);

impl Names {
    /// Names `container` if it has an id with names.
    pub fn apply(&self, container: Option<&mut Container>) {
        let Some(c) = container else { return };
        if let Some(names) = c.id.as_ref().and_then(|id| self.0.get(id)) {
            c.k8s = Some(names.clone());
        }
    }

    /// Names the holders' containers of `a`.
    pub fn apply_to_holders(&self, a: &mut Attribution) {
        for p in a.holders.iter_mut().filter_map(|h| h.process.as_mut()) {
            self.apply(p.container.as_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        container::Runtime,
        model::{sample_attribution, sample_process_holder, HolderKind},
    };

    fn container(id: &str) -> Container {
        Container {
            runtime: Runtime::Containerd,
            id: Some(id.into()),
            pod_uid: None,
            k8s: None,
        }
    }

    #[test]
    fn each_container_is_asked_once_and_named_everywhere() {
        let mut a = sample_attribution("/m", Vec::new());
        for (pid, id) in [(10, "a"), (11, "a"), (12, "b")] {
            let mut h = sample_process_holder(HolderKind::Fd, 1, pid, b"x", None);
            h.process.as_mut().unwrap().container = Some(container(id));
            a.holders.push(h);
        }
        a.holders
            .push(sample_process_holder(HolderKind::Cwd, 1, 13, b"host", None));
        let mut unnamed = Unnamed::default();
        unnamed.add_holders(&a);
        assert_eq!(unnamed.wanted, vec![("a".into(), 10), ("b".into(), 12)]);
        let pod = PodNames {
            pod: "p".into(),
            namespace: "n".into(),
            uid: "u".into(),
            container: Some("c".into()),
            image: None,
        };
        Names(HashMap::from([("a".to_string(), pod.clone())])).apply_to_holders(&mut a);
        let named: Vec<Option<&PodNames>> = a
            .holders
            .iter()
            .map(|h| h.process.as_ref()?.container.as_ref()?.k8s.as_ref())
            .collect();
        assert_eq!(named, vec![Some(&pod), Some(&pod), None, None]);
    }
}
