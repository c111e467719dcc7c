#!/usr/bin/env node
/** `mvnet-cni`: the CNI plugin binary; runs the `cni` hook adapter (cli/hook/cni/). */
import { DEFAULT_SOCKET } from './context.js';
import { processIo } from './hook/adapters.js';
import { cniAdapter } from './hook/cni/index.js';

process.exitCode = await cniAdapter.run(processIo(process.argv.slice(2), process.env.MVNET_SOCKET ?? DEFAULT_SOCKET));
