//! The deployment agrees with the server it deploys.
//!
//! Reads the Kubernetes manifests deploy/kustomization.yaml lists, renders the ConfigMap's
//! tickroom.toml the way the StatefulSet's init container does for pod 0, parses it with the
//! server's own config code (`Config::over_embedded`, which validates), and checks ports,
//! probes, Services, the Ingress, the shutdown grace period, the bus, the feed publisher and the
//! Dockerfile against it. `every_check_can_fail` breaks each of those facts in a copy of the
//! files and expects the check to name it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tickroom::Config;
use tickroom::config::RoomConfig;
use tickroom::feed::FeedConfig;
use yaml_rust2::{Yaml, YamlLoader};

/// The longest SIGTERM shutdown the server takes (the drain, the cluster release, the rooms
/// stopping). The pods' grace period must exceed it, or the kubelet's SIGKILL cuts the drain.
const DRAIN_BOUND_SECS: i64 = tickroom::server::SHUTDOWN_BOUND.as_secs() as i64;

/// The StatefulSet, its container, and the public Service are all called this.
const SERVER: &str = "tickroom";
const INIT: &str = "render-config";
const CONFIG_MAP: &str = "tickroom-config";
const CONFIG_KEY: &str = "tickroom.toml";
/// Filled in per pod by the init container with its TICKROOM_PUBLIC_URL.
const PLACEHOLDER: &str = "@PUBLIC_URL@";
const PUBLIC_URL_ENV: &str = "TICKROOM_PUBLIC_URL";
/// `tickroom feed --name`'s default (src/main.rs).
const FEED_NAME_DEFAULT: &str = "prices";

#[test]
fn manifests_and_dockerfile_agree_with_the_server() {
    let problems = check(&Sources::read());
    assert!(
        problems.is_empty(),
        "deploy/ or the Dockerfile disagrees with the server:\n- {}",
        problems.join("\n- ")
    );
}

/// Each edit breaks one fact; the check must then report a problem containing the given text.
#[test]
fn every_check_can_fail() {
    let cm = "deploy/configmap.yaml";
    let sts = "deploy/tickroom.yaml";
    let breakages: &[(&str, &str, &str, &str)] = &[
        (
            cm,
            r#"listen = "0.0.0.0:8080""#,
            r#"listen = "0.0.0.0:8081""#,
            "containerPorts",
        ),
        (
            cm,
            r#"ops_listen = "0.0.0.0:9090""#,
            r#"ops_listen = "0.0.0.0:9091""#,
            "containerPorts",
        ),
        (
            cm,
            r#"listen = "0.0.0.0:8080""#,
            r#"listen = "127.0.0.1:8080""#,
            "0.0.0.0",
        ),
        (
            sts,
            "containerPort: 9090",
            "containerPort: 9091",
            "containerPorts",
        ),
        (
            cm,
            r#"filter_policy = "mask""#,
            r#"filter_policy = "maybe""#,
            "not a valid tickroom config",
        ),
        (sts, "path: /readyz", "path: /ready", "readinessProbe"),
        (
            sts,
            "path: /healthz\n              port: ops\n            periodSeconds: 10",
            "path: /healthz\n              port: http\n            periodSeconds: 10",
            "livenessProbe",
        ),
        (
            sts,
            "      targetPort: http\n---",
            "      targetPort: http\n    - name: ops\n      port: 9090\n      targetPort: ops\n---",
            "exposes the operations port",
        ),
        (
            sts,
            "      targetPort: http\n---",
            "      targetPort: 8081\n---",
            "public port",
        ),
        (sts, "  clusterIP: None\n", "", "headless"),
        (
            sts,
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: 5",
            "terminationGracePeriodSeconds",
        ),
        (cm, "nats://nats:4222", "nats://nats:4223", "NATS Service"),
        (cm, "nats://nats:4222", "nats://bus:4222", "no Service"),
        ("deploy/nats.yaml", r#""-js", "#, "", "JetStream"),
        (
            "deploy/feed.yaml",
            "- prices",
            "- quotes",
            "which no ticker room reads",
        ),
        (
            "deploy/feed.yaml",
            "nats://nats:4222",
            "nats://nats:4333",
            "--nats",
        ),
        (
            "deploy/feed.yaml",
            "replicas: 1",
            "replicas: 2",
            "one replica",
        ),
        (
            cm,
            r#"public_url = "@PUBLIC_URL@""#,
            r#"public_url = """#,
            PLACEHOLDER,
        ),
        (
            sts,
            ".tickroom-headless.$(POD_NAMESPACE)",
            ".tickroom.$(POD_NAMESPACE)",
            "public_url",
        ),
        (
            sts,
            "$(POD_NAME).tickroom-headless",
            "tickroom-headless",
            "public_url",
        ),
        (
            cm,
            "max_connections_per_ip = 0",
            "max_connections_per_ip = 1000",
            "per-address",
        ),
        (
            cm,
            "max_rooms_per_ip = 64",
            "max_rooms_per_ip = 4",
            "per-address",
        ),
        (
            sts,
            "name: TICKROOM_ADMIN_TOKEN",
            "name: ADMIN_TOKEN",
            "TICKROOM_ADMIN_TOKEN",
        ),
        (
            sts,
            "mountPath: /etc/tickroom\n              readOnly: true",
            "mountPath: /etc/tr\n              readOnly: true",
            "--config",
        ),
        (
            sts,
            "mountPath: /config-template",
            "mountPath: /template",
            INIT,
        ),
        ("deploy/ingress.yaml", "name: http", "name: ops", "Ingress"),
        (
            "deploy/kustomization.yaml",
            "  - feed.yaml\n",
            "",
            "not listed",
        ),
        ("Dockerfile", "EXPOSE 8080 9090", "EXPOSE 8080", "EXPOSE"),
        (
            "Dockerfile",
            r#""/etc/tickroom/tickroom.toml"]"#,
            r#""/etc/tickroom/config.toml"]"#,
            "CMD",
        ),
    ];
    let intact = Sources::read();
    for &(file, from, to, expected) in breakages {
        let mut broken = intact.clone();
        broken.edit(file, from, to);
        let problems = check(&broken);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "replacing {from:?} with {to:?} in {file} went unnoticed (wanted a problem \
             mentioning {expected:?}); problems found: {problems:#?}"
        );
    }
}

/// The files the check reads: the Dockerfile and every YAML file in deploy/, by path.
#[derive(Clone)]
struct Sources {
    files: BTreeMap<String, String>,
}

impl Sources {
    fn read() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        let mut files = BTreeMap::new();
        files.insert("Dockerfile".to_owned(), read(&root.join("Dockerfile")));
        let dir = root.join("deploy");
        for entry in std::fs::read_dir(&dir).expect("deploy/ exists") {
            let path = entry.expect("listing deploy/").path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let name = path.file_name().unwrap().to_string_lossy();
                files.insert(format!("deploy/{name}"), read(&path));
            }
        }
        Self { files }
    }

    fn edit(&mut self, file: &str, from: &str, to: &str) {
        let text = self
            .files
            .get_mut(file)
            .unwrap_or_else(|| panic!("no {file}"));
        assert!(
            text.contains(from),
            "{file} no longer contains {from:?}: update every_check_can_fail"
        );
        *text = text.replacen(from, to, 1);
    }
}

/// Every disagreement found, in words; empty when all agree.
fn check(sources: &Sources) -> Vec<String> {
    let mut c = Check::default();
    if let Err(fatal) = check_all(sources, &mut c) {
        c.problems.push(fatal);
    }
    c.problems
}

#[derive(Default)]
struct Check {
    problems: Vec<String>,
}

impl Check {
    fn that(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }
}

fn check_all(sources: &Sources, c: &mut Check) -> Result<(), String> {
    let m = Manifests::load(sources, c)?;

    // The server's pods and the config they serve, rendered as the init container does.
    let sts = m.get("StatefulSet", SERVER)?;
    let pod = &sts["spec"]["template"]["spec"];
    let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
    let server = container(&pod["containers"], SERVER)?;
    let init = container(&pod["initContainers"], INIT)?;
    let template = m.get("ConfigMap", CONFIG_MAP)?["data"][CONFIG_KEY]
        .as_str()
        .ok_or(format!("ConfigMap {CONFIG_MAP} has no {CONFIG_KEY}"))?;
    c.that(template.contains(PLACEHOLDER), || {
        format!(
            "ConfigMap {CONFIG_MAP}: {CONFIG_KEY} has no {PLACEHOLDER} for public_url: every pod \
             would announce the same URL"
        )
    });
    let pod_name = format!("{SERVER}-0");
    let public_url = env_value(init, PUBLIC_URL_ENV, &pod_name, &m.namespace)?;
    let rendered = template.replace(PLACEHOLDER, &public_url);
    let config = Config::over_embedded(&rendered).map_err(|e| {
        format!("ConfigMap {CONFIG_MAP}: {CONFIG_KEY} is not a valid tickroom config: {e}")
    })?;
    let public = config.server.listen;
    let ops = config.server.ops_listen;

    // Ports: both on every address, and exactly those in the container.
    c.that(
        public.ip().is_unspecified() && ops.ip().is_unspecified(),
        || format!("listen ({public}) and ops_listen ({ops}) must be on 0.0.0.0 in a pod"),
    );
    let declared: BTreeSet<i64> = items(&server["ports"])
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    let expected = BTreeSet::from([i64::from(public.port()), i64::from(ops.port())]);
    c.that(declared == expected, || {
        format!("container {SERVER}'s containerPorts {declared:?} are not the config's listen and ops_listen ports {expected:?}")
    });

    // Probes: on the operations port, readiness on /readyz, liveness on /healthz.
    for (probe, paths) in [
        ("readinessProbe", &["/readyz"][..]),
        ("livenessProbe", &["/healthz"][..]),
        ("startupProbe", &["/healthz", "/readyz"][..]),
    ] {
        let get = &server[probe]["httpGet"];
        if probe == "startupProbe" && server[probe].is_badvalue() {
            continue;
        }
        let path = get["path"].as_str().unwrap_or("");
        c.that(paths.contains(&path), || {
            format!("{probe} asks for {path:?}, not {}", paths.join(" or "))
        });
        let port = resolve_port(server, &get["port"]);
        c.that(port == Some(ops.port()), || {
            format!(
                "{probe} goes to port {port:?}, not the operations port {}",
                ops.port()
            )
        });
    }

    // Services: the public port, never the operations port.
    let services: Vec<&Yaml> = m
        .all("Service")
        .filter(|s| selects(&s["spec"]["selector"], pod_labels))
        .collect();
    c.that(!services.is_empty(), || {
        format!("no Service selects the {SERVER} pods")
    });
    for service in &services {
        let name = name_of(service);
        for port in items(&service["spec"]["ports"]) {
            let target = service_target(server, port);
            c.that(target != Some(ops.port()), || {
                format!("Service {name} exposes the operations port {}", ops.port())
            });
        }
    }
    let serves_public = |service: &Yaml| {
        items(&service["spec"]["ports"])
            .iter()
            .any(|p| service_target(server, p) == Some(public.port()))
    };
    let public_service = m.get("Service", SERVER)?;
    c.that(
        selects(&public_service["spec"]["selector"], pod_labels) && serves_public(public_service),
        || {
            format!(
                "Service {SERVER} does not lead to the public port {}",
                public.port()
            )
        },
    );
    let headless_name = sts["spec"]["serviceName"].as_str().unwrap_or("");
    let headless = m.get("Service", headless_name)?;
    c.that(
        headless["spec"]["clusterIP"].as_str() == Some("None")
            && selects(&headless["spec"]["selector"], pod_labels)
            && serves_public(headless),
        || {
            format!(
                "StatefulSet {SERVER}'s serviceName {headless_name:?} must be a headless \
                 Service (clusterIP: None) of its pods with the public port"
            )
        },
    );

    // Ingress: to the public Service's public port.
    let ingresses: Vec<&Yaml> = m.all("Ingress").collect();
    c.that(!ingresses.is_empty(), || "no Ingress".to_owned());
    for ingress in &ingresses {
        for rule in items(&ingress["spec"]["rules"]) {
            for path in items(&rule["http"]["paths"]) {
                let backend = &path["backend"]["service"];
                let to = backend["name"].as_str().unwrap_or("");
                let reaches = m.get("Service", to).ok().is_some_and(|service| {
                    items(&service["spec"]["ports"]).iter().any(|p| {
                        let same = match (&backend["port"]["name"], &backend["port"]["number"]) {
                            (Yaml::String(n), _) => p["name"].as_str() == Some(n),
                            (_, Yaml::Integer(n)) => p["port"].as_i64() == Some(*n),
                            _ => false,
                        };
                        same && service_target(server, p) == Some(public.port())
                    })
                });
                c.that(reaches, || {
                    format!(
                        "Ingress {} sends {:?} to Service {to:?} port {}, not to the public port {}",
                        name_of(ingress),
                        path["path"].as_str().unwrap_or(""),
                        strings(&Yaml::Array(vec![
                            backend["port"]["name"].clone(),
                            backend["port"]["number"].clone()
                        ]))
                        .join(""),
                        public.port()
                    )
                });
            }
        }
    }

    // Behind the ingress every client has the ingress' address: per-address limits would
    // cap all clients together, so they must be off (0) or no lower than the global ones.
    if !ingresses.is_empty() {
        let (s, api, game) = (&config.server, &config.api, &config.game);
        for (key, per_ip, global) in [
            (
                "server.max_connections_per_ip",
                s.max_connections_per_ip,
                s.max_connections,
            ),
            (
                "api.max_sessions_per_ip",
                api.max_sessions_per_ip,
                api.max_sessions,
            ),
        ] {
            c.that(per_ip == 0 || per_ip >= global, || {
                format!("{key} = {per_ip} is a per-address limit below the global {global}: behind the ingress all clients share one address")
            });
        }
        c.that(s.connects_per_ip_per_sec == 0.0, || {
            "server.connects_per_ip_per_sec must be 0 behind the ingress (a per-address rate for all clients together)".to_owned()
        });
        c.that(
            !game.auto_create || game.max_rooms_per_ip >= game.max_rooms,
            || {
                format!(
                    "game.max_rooms_per_ip = {} is a per-address limit below game.max_rooms = {}: behind the ingress all clients share one address",
                    game.max_rooms_per_ip, game.max_rooms
                )
            },
        );
    }

    // Shutdown: the grace period outlasts the drain.
    let grace = pod["terminationGracePeriodSeconds"].as_i64();
    c.that(grace.is_some_and(|g| g > DRAIN_BOUND_SECS), || {
        format!("terminationGracePeriodSeconds {grace:?} must exceed the server's drain ({DRAIN_BOUND_SECS} s)")
    });

    // The admin token from a Secret, never in the ConfigMap.
    let admin = items(&server["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some("TICKROOM_ADMIN_TOKEN"));
    c.that(
        admin.is_some_and(|e| !e["valueFrom"]["secretKeyRef"]["name"].is_badvalue())
            && config.admin.token.is_empty(),
        || "TICKROOM_ADMIN_TOKEN must come from a Secret (secretKeyRef), and [admin] token stay empty".to_owned(),
    );

    // The config file: the path the server is told, where the init container writes it, and
    // where it reads the ConfigMap.
    let args = strings(&server["args"]);
    let config_path = flag(&args, "--config").unwrap_or_default();
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap_or(("", ""));
    let mounted = |container: &Yaml, dir: &str| {
        items(&container["volumeMounts"])
            .iter()
            .find(|v| v["mountPath"].as_str() == Some(dir))
            .and_then(|v| v["name"].as_str())
            .map(str::to_owned)
    };
    let config_volume = mounted(server, config_dir);
    c.that(args.first().map(String::as_str) == Some("serve") && config_volume.is_some(), || {
        format!("container {SERVER} must run `serve --config FILE` with FILE's folder mounted; args {args:?}")
    });
    let script = strings(&init["command"]).join(" ") + " " + &strings(&init["args"]).join(" ");
    let mount_of = |volume: &Option<String>| {
        items(&init["volumeMounts"])
            .iter()
            .find(|v| v["name"].as_str() == volume.as_deref())
            .and_then(|v| v["mountPath"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let written = format!("{}/{config_file}", mount_of(&config_volume));
    let template_volume = items(&pod["volumes"])
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(CONFIG_MAP))
        .and_then(|v| v["name"].as_str())
        .map(str::to_owned);
    let read = format!("{}/{CONFIG_KEY}", mount_of(&template_volume));
    c.that(
        config_volume.is_some()
            && script.contains(&written)
            && script.contains(&read)
            && script.contains(PLACEHOLDER)
            && script.contains(&format!("${PUBLIC_URL_ENV}")),
        || {
            format!(
                "init container {INIT} must read {read} (ConfigMap {CONFIG_MAP}), replace \
                 {PLACEHOLDER} with ${PUBLIC_URL_ENV} and write {written}, the file the server's \
                 --config names ({config_path})"
            )
        },
    );

    // The bus: the config's NATS URL names the NATS Service, whose pods run JetStream.
    let cluster = config
        .cluster
        .as_ref()
        .ok_or("the config has no [cluster]: the nodes would not share rooms")?;
    let (nats_host, nats_port) = host_port(&cluster.nats_url, "nats://", 4222).ok_or(format!(
        "cluster.nats_url {:?} is not nats://HOST[:PORT]",
        cluster.nats_url
    ))?;
    let nats_service = nats_host.split('.').next().unwrap_or("");
    c.that(
        nats_host
            .split('.')
            .nth(1)
            .is_none_or(|ns| ns == m.namespace),
        || {
            format!(
                "cluster.nats_url's host {nats_host} is not in namespace {}",
                m.namespace
            )
        },
    );
    let nats = m.get("Service", nats_service).map_err(|_| {
        format!("cluster.nats_url names {nats_host}, but there is no Service {nats_service:?}")
    })?;
    let (nats_workload, nats_container) = m
        .backing(nats)
        .ok_or(format!("Service {nats_service} selects no workload"))?;
    let nats_target = items(&nats["spec"]["ports"])
        .iter()
        .find(|p| p["port"].as_i64() == Some(i64::from(nats_port)))
        .and_then(|p| service_target(nats_container, p));
    let nats_listens = items(&nats_container["ports"])
        .iter()
        .any(|p| p["containerPort"].as_i64() == nats_target.map(i64::from));
    c.that(nats_target.is_some() && nats_listens, || {
        format!("cluster.nats_url's port {nats_port} is not a port of the NATS Service {nats_service} leading to its container")
    });
    let nats_args = strings(&nats_container["args"]);
    c.that(
        nats_args.iter().any(|a| a == "-js" || a == "--jetstream"),
        || format!("{nats_workload}: nats-server runs without JetStream (-js); args {nats_args:?}"),
    );
    if let Some(dir) = flag(&nats_args, "-sd").or_else(|| flag(&nats_args, "--store_dir")) {
        c.that(mounted(nats_container, &dir).is_some(), || {
            format!("{nats_workload}: the JetStream store {dir} is not a mounted volume")
        });
    }

    // Node name and redirect URL: the pod's own.
    c.that(cluster.node.is_empty(), || {
        "cluster.node must stay empty: each pod's name is its node name".to_owned()
    });
    check_public_url(
        c,
        &cluster.public_url,
        &pod_name,
        headless_name,
        &m.namespace,
        public.port(),
    );

    // The feed: every bus-fed ticker room has its one publisher, and every publisher a room.
    let bus_feeds: BTreeSet<String> = config
        .rooms
        .iter()
        .filter_map(|room| match room {
            RoomConfig::Ticker { ticker, .. } => match &ticker.feed {
                FeedConfig::Bus(bus) => Some(bus.name.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut published = BTreeSet::new();
    for deployment in m.all("Deployment") {
        let spec = &deployment["spec"];
        for feed in items(&spec["template"]["spec"]["containers"]) {
            let args = strings(&feed["args"]);
            if args.first().map(String::as_str) != Some("feed") {
                continue;
            }
            let name = flag(&args, "--name").unwrap_or_else(|| FEED_NAME_DEFAULT.to_owned());
            let nats_arg = flag(&args, "--nats");
            let deployment = name_of(deployment);
            c.that(
                nats_arg.as_deref() == Some(cluster.nats_url.as_str()),
                || {
                    format!(
                        "Deployment {deployment}: --nats {nats_arg:?} is not cluster.nats_url {:?}",
                        cluster.nats_url
                    )
                },
            );
            c.that(
                spec["replicas"].as_i64() == Some(1)
                    && spec["strategy"]["type"].as_str() == Some("Recreate"),
                || format!("Deployment {deployment} publishes feed {name:?}: one replica, strategy Recreate"),
            );
            c.that(bus_feeds.contains(&name), || {
                format!("Deployment {deployment} publishes feed {name:?}, which no ticker room reads (bus feeds: {bus_feeds:?})")
            });
            c.that(published.insert(name.clone()), || {
                format!("feed {name:?} has more than one publisher")
            });
        }
    }
    for name in bus_feeds.difference(&published) {
        c.that(false, || {
            format!("a ticker room reads the bus feed {name:?}, but no Deployment runs `tickroom feed --name {name}`")
        });
    }

    // The image: the one kustomize sets, for the server and the publisher alike.
    let image = server["image"].as_str().unwrap_or("");
    let feed_images: Vec<&str> = m
        .all("Deployment")
        .flat_map(|d| items(&d["spec"]["template"]["spec"]["containers"]))
        .filter(|k| strings(&k["args"]).first().map(String::as_str) == Some("feed"))
        .filter_map(|k| k["image"].as_str())
        .collect();
    c.that(
        m.images.iter().any(|i| i == image) && feed_images.iter().all(|i| *i == image),
        || format!("the server's image {image:?} and the feed's {feed_images:?} must be the same, and one of kustomization.yaml's images {:?}", m.images),
    );

    check_dockerfile(
        c,
        &sources.files["Dockerfile"],
        &[public.port(), ops.port()],
        &config_path,
    );
    Ok(())
}

/// public_url must reach this very pod: the in-cluster default is
/// `ws://<pod>.<headless Service>.<namespace>.svc...:<public port>/ws`; any other host must at
/// least carry the pod's name (one URL for every pod would send redirects round in circles).
fn check_public_url(c: &mut Check, url: &str, pod: &str, headless: &str, ns: &str, port: u16) {
    let scheme = if url.starts_with("wss://") {
        "wss://"
    } else {
        "ws://"
    };
    let Some((authority, path)) = url
        .strip_prefix(scheme)
        .map(|rest| rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p)))
    else {
        c.that(false, || {
            format!("cluster.public_url {url:?} is not a ws:// or wss:// URL")
        });
        return;
    };
    let default_port = if scheme == "wss://" { 443 } else { 80 };
    let (host, url_port) = host_port(authority, "", default_port).unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    c.that(path == "ws", || {
        format!("cluster.public_url {url:?} does not end in /ws")
    });
    c.that(labels.first() == Some(&pod), || {
        format!("cluster.public_url {url:?} (rendered for {pod}) is not this pod's own address")
    });
    if labels.get(3) == Some(&"svc") {
        c.that(
            labels[1] == headless && labels[2] == ns && url_port == port,
            || {
                format!(
                    "cluster.public_url {url:?}: in the cluster it must be \
                     {pod}.{headless}.{ns}.svc...:{port}/ws (the headless Service, the public port)"
                )
            },
        );
    }
}

/// EXPOSE lists the config's ports; ENTRYPOINT and CMD run `tickroom serve --config` the same
/// file as the StatefulSet; the runtime user is not root.
fn check_dockerfile(c: &mut Check, text: &str, ports: &[u16], config_path: &str) {
    let mut instructions = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        if raw.trim_start().starts_with('#') || (line.is_empty() && raw.trim().is_empty()) {
            continue;
        }
        if let Some(more) = raw.trim_end().strip_suffix('\\') {
            line.push_str(more);
            line.push(' ');
            continue;
        }
        line.push_str(raw);
        let (op, rest) = line
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((line.trim(), ""));
        instructions.push((op.to_ascii_uppercase(), rest.trim().to_owned()));
        line.clear();
    }
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .unwrap_or(0);
    let runtime = &instructions[last_from..];
    let last = |op: &str| {
        runtime
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, rest)| rest.as_str())
    };
    let exposed: BTreeSet<u16> = runtime
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .filter_map(|p| p.trim_end_matches("/tcp").parse().ok())
        .collect();
    let wanted: BTreeSet<u16> = ports.iter().copied().collect();
    c.that(exposed == wanted, || {
        format!("Dockerfile: EXPOSE {exposed:?}, but the deployed config listens on {wanted:?}")
    });
    let exec = |op: &str| -> Vec<String> {
        last(op)
            .and_then(|rest| serde_json::from_str(rest).ok())
            .unwrap_or_default()
    };
    let entrypoint = exec("ENTRYPOINT");
    c.that(
        entrypoint.len() == 1 && entrypoint[0].rsplit('/').next() == Some("tickroom"),
        || format!("Dockerfile: ENTRYPOINT {entrypoint:?} is not [\".../tickroom\"] (exec form)"),
    );
    let cmd = exec("CMD");
    c.that(
        cmd.first().map(String::as_str) == Some("serve")
            && flag(&cmd, "--config").as_deref() == Some(config_path),
        || format!("Dockerfile: CMD {cmd:?} does not serve --config {config_path} as the StatefulSet does"),
    );
    let user = last("USER").unwrap_or("root");
    let uid = user.split(':').next().unwrap_or("");
    c.that(uid != "root" && uid != "0", || {
        format!("Dockerfile: the runtime runs as {user:?}; use a non-root USER")
    });
}

/// The objects of the files kustomization.yaml lists, every document of each.
struct Manifests {
    objects: Vec<Yaml>,
    namespace: String,
    images: Vec<String>,
}

impl Manifests {
    fn load(sources: &Sources, c: &mut Check) -> Result<Self, String> {
        let parse = |file: &str| -> Result<Vec<Yaml>, String> {
            let text = sources
                .files
                .get(file)
                .ok_or(format!("{file} does not exist"))?;
            let docs = YamlLoader::load_from_str(text).map_err(|e| format!("{file}: {e}"))?;
            // `---` at the start or the end of a file makes an empty document.
            Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
        };
        let kustomization = parse("deploy/kustomization.yaml")?
            .into_iter()
            .next()
            .ok_or("deploy/kustomization.yaml is empty")?;
        let resources = strings(&kustomization["resources"]);
        for file in sources.files.keys() {
            if let Some(name) = file.strip_prefix("deploy/") {
                c.that(
                    name == "kustomization.yaml" || resources.iter().any(|r| r == name),
                    || format!("{file} is not listed in deploy/kustomization.yaml's resources"),
                );
            }
        }
        let mut objects = Vec::new();
        for resource in &resources {
            let file = format!("deploy/{resource}");
            for doc in parse(&file)? {
                if doc["kind"].as_str().is_none() || doc["metadata"]["name"].as_str().is_none() {
                    return Err(format!("{file}: a document without kind or metadata.name"));
                }
                objects.push(doc);
            }
        }
        Ok(Self {
            objects,
            namespace: kustomization["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            images: items(&kustomization["images"])
                .iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect(),
        })
    }

    fn all<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Yaml> + use<'a> {
        let kind = kind.to_owned();
        self.objects
            .iter()
            .filter(move |o| o["kind"].as_str() == Some(kind.as_str()))
    }

    fn get(&self, kind: &str, name: &str) -> Result<&Yaml, String> {
        self.all(kind)
            .find(|o| name_of(o) == name)
            .ok_or(format!("no {kind} {name:?} in deploy/"))
    }

    /// The workload (named) and first container behind a Service.
    fn backing(&self, service: &Yaml) -> Option<(String, &Yaml)> {
        ["StatefulSet", "Deployment"]
            .into_iter()
            .flat_map(|kind| self.all(kind))
            .find(|w| {
                selects(
                    &service["spec"]["selector"],
                    &w["spec"]["template"]["metadata"]["labels"],
                )
            })
            .map(|w| {
                let kind = w["kind"].as_str().unwrap_or("");
                (
                    format!("{kind} {}", name_of(w)),
                    &w["spec"]["template"]["spec"]["containers"][0],
                )
            })
    }
}

fn name_of(object: &Yaml) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// A sequence's items; none for anything else (an absent key).
fn items(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

/// A sequence of scalars as strings (args: numbers may be written unquoted).
fn strings(y: &Yaml) -> Vec<String> {
    items(y)
        .iter()
        .filter_map(|v| match v {
            Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
            Yaml::Integer(i) => Some(i.to_string()),
            _ => None,
        })
        .collect()
}

/// The value of `--flag VALUE` or `--flag=VALUE` in an argument list.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_owned)
        }
    })
}

fn container<'a>(list: &'a Yaml, name: &str) -> Result<&'a Yaml, String> {
    items(list)
        .iter()
        .find(|k| k["name"].as_str() == Some(name))
        .ok_or(format!("no container {name:?} in StatefulSet {SERVER}"))
}

/// A port given by number or by the name of one of the container's ports.
fn resolve_port(container: &Yaml, port: &Yaml) -> Option<u16> {
    let number = match port {
        Yaml::Integer(n) => Some(*n),
        Yaml::String(name) => items(&container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64()),
        _ => None,
    };
    number.and_then(|n| u16::try_from(n).ok())
}

/// The container port a Service port leads to (targetPort, or port when absent).
fn service_target(container: &Yaml, service_port: &Yaml) -> Option<u16> {
    match &service_port["targetPort"] {
        Yaml::BadValue => resolve_port(container, &service_port["port"]),
        target => resolve_port(container, target),
    }
}

/// A Service selector that matches these pod labels (an empty selector matches nothing here).
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    selector.as_hash().is_some_and(|s| {
        !s.is_empty()
            && s.iter()
                .all(|(k, v)| labels[k.as_str().unwrap_or("")] == *v)
    })
}

/// An env var's value as Kubernetes expands it for pod `pod` in `namespace`: `$(VAR)` becomes
/// an earlier variable's value, here the downward API's metadata.name and metadata.namespace.
fn env_value(container: &Yaml, var: &str, pod: &str, namespace: &str) -> Result<String, String> {
    let env = items(&container["env"]);
    let find = |name: &str| env.iter().find(|e| e["name"].as_str() == Some(name));
    let mut value = find(var)
        .and_then(|e| e["value"].as_str())
        .ok_or(format!("container {INIT} has no {var} value"))?
        .to_owned();
    while let Some(start) = value.find("$(") {
        let end = value[start..]
            .find(')')
            .ok_or(format!("{var}: unclosed $("))?
            + start;
        let name = &value[start + 2..end];
        let field = find(name).and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str());
        let replacement = match field {
            Some("metadata.name") => pod,
            Some("metadata.namespace") => namespace,
            _ => {
                return Err(format!(
                    "{var} uses $({name}), which is not the pod's name or namespace"
                ));
            }
        };
        value.replace_range(start..=end, replacement);
    }
    Ok(value)
}

/// `scheme HOST[:PORT]` split, with the default port when none is given.
fn host_port(url: &str, scheme: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.strip_prefix(scheme)?.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((rest.to_owned(), default_port)),
    }
}
