/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * <libcare/livepatch.h>: the kernel's livepatch interface (callbacks, shadow variables,
 * states) for the source of a libcare live patch, with `klp_` spelled `libcare_` and no
 * gfp_t arguments. Only the patched source includes it; libcare-cc puts it on the include
 * path.
 *
 *   LIBCARE_CALLBACKS(object, pre_patch, post_patch, pre_unpatch, post_unpatch);
 *       object: NULL for the program, or a library's soname ("libfoo.so.1"); any callback
 *       may be NULL. libcare-ctl runs them inside the process, in a thread that holds no lock
 *       of the C library, while the other threads run: pre_patch before the switch (a
 *       non-zero return cancels the patch), post_patch after it, pre_unpatch before the
 *       revert, post_unpatch after it. They may call printf, malloc, take locks.
 *   libcare_shadow_alloc/get/get_or_alloc/free/free_all
 *       data attached to an existing object by (address, id), shared by every patch of the
 *       process and kept across an atomic replace (the kernel's klp_shadow_*).
 *   LIBCARE_STATE(id, version); libcare_get_state(id); libcare_get_prev_state(id)
 *       a patch applied later must carry every state an applied patch set, at the same or a
 *       higher version (the kernel's klp_state).
 *
 * The records below are part of the .kpatch format (crates/kpatch-file/src/livepatch.rs).
 * Patch code built from this header also applies with LibcarePlus, which ignores callbacks
 * and states; there the shadow functions find no registry and return NULL.
 */
#ifndef LIBCARE_LIVEPATCH_H
#define LIBCARE_LIVEPATCH_H

#include <sched.h>
#include <stddef.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The object callbacks are for: the program (name NULL) or a shared library. */
struct libcare_object {
	const char *name;
};

/* One record of section .kpatch.callbacks (56 bytes). */
struct libcare_callbacks {
	struct libcare_object obj;
	int (*pre_patch)(struct libcare_object *obj);
	void (*post_patch)(struct libcare_object *obj);
	void (*pre_unpatch)(struct libcare_object *obj);
	void (*post_unpatch)(struct libcare_object *obj);
	unsigned long __state;	/* what libcare-ctl has run */
	unsigned long __order;	/* the line of the declaration */
};

#define __LIBCARE_CAT2(a, b) a##b
#define __LIBCARE_CAT(a, b) __LIBCARE_CAT2(a, b)

#define LIBCARE_CALLBACKS(object, pre, post, pre_un, post_un)                          \
	static struct libcare_callbacks __LIBCARE_CAT(__libcare_callbacks_, __LINE__)  \
		__attribute__((used, aligned(8), section(".kpatch.callbacks"))) = {    \
			{ (object) }, (pre), (post), (pre_un), (post_un), 0, __LINE__  \
		}

/* A state, as libcare_get_state() returns it: `data` is the patch's to use. */
struct libcare_state {
	unsigned long id;
	unsigned int version;
	void *data;
};

/* One record of section .kpatch.states (16 bytes). */
struct __libcare_state_decl {
	unsigned long id;
	unsigned int version;
	unsigned int __reserved;
};

#define LIBCARE_STATE(id, version)                                                     \
	static const struct __libcare_state_decl __LIBCARE_CAT(__libcare_state_, __LINE__) \
		__attribute__((used, aligned(8), section(".kpatch.states"))) = {       \
			(id), (version), 0                                             \
		}

/* The process's registry: one page libcare-ctl maps (crates/kpatch-file/src/livepatch.rs). */
struct __libcare_shadow {
	struct __libcare_shadow *next;
	void *obj;
	unsigned long id;
	size_t size;
	unsigned char data[] __attribute__((aligned(16)));
};

struct __libcare_state_slot {
	struct libcare_state state;
	unsigned long seq;		/* order of the patch among the applied ones */
	unsigned long start, end;	/* its memory; end == 0: a free slot */
};

#define __LIBCARE_STATE_SLOTS 84

struct __libcare_registry {
	char magic[8];
	int lock;
	unsigned int __reserved0;
	struct __libcare_shadow *shadows;
	unsigned long __reserved[5];
	struct __libcare_state_slot slots[__LIBCARE_STATE_SLOTS];
};

/* The registry's address, written by libcare-ctl into every slot of .kpatch.registry when the
 * patch is applied; NULL where no runtime filled it (LibcarePlus). */
static inline struct __libcare_registry *__libcare_registry(void)
{
	static struct __libcare_registry *volatile slot
		__attribute__((aligned(8), section(".kpatch.registry"))) = 0;
	return slot;
}

static inline void __libcare_lock(struct __libcare_registry *r)
{
	while (__atomic_exchange_n(&r->lock, 1, __ATOMIC_ACQUIRE))
		sched_yield();
}

static inline void __libcare_unlock(struct __libcare_registry *r)
{
	__atomic_store_n(&r->lock, 0, __ATOMIC_RELEASE);
}

typedef int (*libcare_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*libcare_shadow_dtor_t)(void *obj, void *shadow_data);

/* Called with the lock held. */
static inline struct __libcare_shadow *__libcare_shadow_find(struct __libcare_registry *r,
							     void *obj, unsigned long id)
{
	struct __libcare_shadow *s;

	for (s = r->shadows; s; s = s->next)
		if (s->obj == obj && s->id == id)
			return s;
	return NULL;
}

/* The data attached to <obj, id>, or NULL. */
static inline void *libcare_shadow_get(void *obj, unsigned long id)
{
	struct __libcare_registry *r = __libcare_registry();
	struct __libcare_shadow *s;

	if (!r)
		return NULL;
	__libcare_lock(r);
	s = __libcare_shadow_find(r, obj, id);
	__libcare_unlock(r);
	return s ? s->data : NULL;
}

static inline void *__libcare_shadow_get_or_alloc(void *obj, unsigned long id, size_t size,
						  libcare_shadow_ctor_t ctor, void *ctor_data,
						  int fail_if_present)
{
	struct __libcare_registry *r = __libcare_registry();
	struct __libcare_shadow *s, *fresh;

	if (!r)
		return NULL;
	fresh = (struct __libcare_shadow *)calloc(1, sizeof(*fresh) + size);
	if (!fresh)
		return NULL;
	__libcare_lock(r);
	s = __libcare_shadow_find(r, obj, id);
	if (s) {
		__libcare_unlock(r);
		free(fresh);
		return fail_if_present ? NULL : s->data;
	}
	fresh->obj = obj;
	fresh->id = id;
	fresh->size = size;
	if (ctor && ctor(obj, fresh->data, ctor_data)) {
		__libcare_unlock(r);
		free(fresh);
		return NULL;
	}
	fresh->next = r->shadows;
	r->shadows = fresh;
	__libcare_unlock(r);
	return fresh->data;
}

/* New zeroed data of `size` bytes attached to <obj, id>, set up by `ctor` (if not NULL; a
 * non-zero return fails the allocation); NULL if <obj, id> already has data. */
static inline void *libcare_shadow_alloc(void *obj, unsigned long id, size_t size,
					 libcare_shadow_ctor_t ctor, void *ctor_data)
{
	return __libcare_shadow_get_or_alloc(obj, id, size, ctor, ctor_data, 1);
}

/* The data attached to <obj, id>, allocated as by libcare_shadow_alloc if there is none. */
static inline void *libcare_shadow_get_or_alloc(void *obj, unsigned long id, size_t size,
						libcare_shadow_ctor_t ctor, void *ctor_data)
{
	return __libcare_shadow_get_or_alloc(obj, id, size, ctor, ctor_data, 0);
}

/* Detaches and frees the data of <obj, id>, after `dtor` (if not NULL). */
static inline void libcare_shadow_free(void *obj, unsigned long id, libcare_shadow_dtor_t dtor)
{
	struct __libcare_registry *r = __libcare_registry();
	struct __libcare_shadow **p, *s;

	if (!r)
		return;
	__libcare_lock(r);
	for (p = &r->shadows; (s = *p); p = &s->next) {
		if (s->obj == obj && s->id == id) {
			*p = s->next;
			if (dtor)
				dtor(s->obj, s->data);
			free(s);
			break;
		}
	}
	__libcare_unlock(r);
}

/* Detaches and frees the data of every <obj, id> with this id, after `dtor` (if not NULL). */
static inline void libcare_shadow_free_all(unsigned long id, libcare_shadow_dtor_t dtor)
{
	struct __libcare_registry *r = __libcare_registry();
	struct __libcare_shadow **p, *s;

	if (!r)
		return;
	__libcare_lock(r);
	for (p = &r->shadows; (s = *p);) {
		if (s->id == id) {
			*p = s->next;
			if (dtor)
				dtor(s->obj, s->data);
			free(s);
		} else {
			p = &s->next;
		}
	}
	__libcare_unlock(r);
}

/* State `id` of the patch this code belongs to (prev == 0), or of the newest patch applied
 * before it that has one (prev != 0); NULL if there is none. A patch is known by its memory:
 * the slot's region holds this function's code. */
static inline struct libcare_state *__libcare_state(unsigned long id, int prev)
{
	struct __libcare_registry *r = __libcare_registry();
	unsigned long me = (unsigned long)(void *)&__libcare_state;
	unsigned long my_seq = ~0UL;
	struct libcare_state *found = NULL;
	unsigned long found_seq = 0;
	int i;

	if (!r)
		return NULL;
	for (i = 0; i < __LIBCARE_STATE_SLOTS; i++) {
		struct __libcare_state_slot *s = &r->slots[i];
		unsigned long end = __atomic_load_n(&s->end, __ATOMIC_ACQUIRE);

		if (end && s->start <= me && me < end)
			my_seq = s->seq;
	}
	for (i = 0; i < __LIBCARE_STATE_SLOTS; i++) {
		struct __libcare_state_slot *s = &r->slots[i];
		unsigned long end = __atomic_load_n(&s->end, __ATOMIC_ACQUIRE);
		int mine;

		if (!end || s->state.id != id)
			continue;
		mine = s->start <= me && me < end;
		if (!prev && mine)
			return &s->state;
		if (prev && !mine && s->seq < my_seq && (!found || s->seq > found_seq)) {
			found = &s->state;
			found_seq = s->seq;
		}
	}
	return found;
}

/* This patch's state `id` (declared with LIBCARE_STATE), or NULL. */
static inline struct libcare_state *libcare_get_state(unsigned long id)
{
	return __libcare_state(id, 0);
}

/* State `id` of the newest patch applied before this one that declared it, or NULL. */
static inline struct libcare_state *libcare_get_prev_state(unsigned long id)
{
	return __libcare_state(id, 1);
}

#ifdef __cplusplus
}
#endif

#endif /* LIBCARE_LIVEPATCH_H */
